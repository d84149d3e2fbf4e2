package latchkey

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "gopkg.in/square/go-jose.v2"
	"gopkg.in/square/go-jose.v2/jwt"
)

// The verifier's cache and claim checks, with keys made here.

type signingKey struct {
	kid     string
	alg     jose.SignatureAlgorithm
	private crypto.Signer
}

func newKey(t *testing.T, kid string, alg jose.SignatureAlgorithm) signingKey {
	t.Helper()
	var private crypto.Signer
	var err error
	switch alg {
	case jose.EdDSA:
		_, private, err = ed25519.GenerateKey(rand.Reader)
	case jose.ES256:
		private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		private, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: alg, private: private}
}

func (k signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a token of issuer "iss", audience "aud", tenant "t", valid from
// now for a minute, with overrides (a nil value removes the claim).
func (k signingKey) sign(t *testing.T, now time.Time, overrides map[string]interface{}) string {
	t.Helper()
	return signAs(t, k.alg, k, now, overrides)
}

// signAs signs with k's private key but names alg in the header.
func signAs(t *testing.T, alg jose.SignatureAlgorithm, k signingKey, now time.Time, overrides map[string]interface{}) string {
	t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k.private, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]interface{}{
		"iss": "iss", "aud": "aud", "sub": "u", "tid": "t", "email": "ada@example.com", "sid": "s",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	}
	for name, value := range overrides {
		if value == nil {
			delete(claims, name)
		} else {
			claims[name] = value
		}
	}
	token, err := jwt.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// keySet serves a changeable JWKS and counts the fetches.
type keySet struct {
	mu    sync.Mutex
	keys  []jose.JSONWebKey
	fail  bool
	calls int
}

func (s *keySet) set(keys ...signingKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for _, k := range keys {
		s.keys = append(s.keys, k.jwk())
	}
}

func (s *keySet) fetch(context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail {
		return nil, errors.New("the key server is down")
	}
	return json.Marshal(jose.JSONWebKeySet{Keys: s.keys})
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) advance(d time.Duration) { c.now = c.now.Add(d) }
func newClock() *clock                   { return &clock{now: time.Unix(1_700_000_000, 0)} }
func config(c *clock) VerifierConfig {
	return VerifierConfig{Issuer: "iss", Audience: "aud", Now: c.Now}
}

// accepted(t)(v.Verify(…)) fails the test unless the token was accepted.
func accepted(t *testing.T) func(*Claims, error) *Claims {
	return func(claims *Claims, err error) *Claims {
		t.Helper()
		if err != nil {
			t.Fatalf("the token was refused: %v", err)
		}
		return claims
	}
}

func refused(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("want ErrInvalidToken, got %v", err)
	}
}

func TestUnknownKidsRefetchAtMostOncePerInterval(t *testing.T) {
	c := newClock()
	a, b := newKey(t, "a", jose.EdDSA), newKey(t, "b", jose.EdDSA)
	keys := &keySet{}
	keys.set(a)
	cfg := config(c)
	cfg.MinRefetchInterval = 10 * time.Second
	v := NewVerifier(keys.fetch, cfg)
	ctx := context.Background()

	claims := accepted(t)(v.Verify(ctx, a.sign(t, c.now, nil)))
	if claims.Subject != "u" || claims.Email != "ada@example.com" || claims.SessionID != "s" || claims.TenantID != "t" {
		t.Fatalf("claims: %+v", claims)
	}
	// A forged kid: one refetch at once, then none until the interval passed.
	_, err := v.Verify(ctx, b.sign(t, c.now, nil))
	refused(t, err)
	keys.set(a, b)
	c.advance(9 * time.Second)
	_, err = v.Verify(ctx, b.sign(t, c.now, nil))
	refused(t, err)
	if v.Fetches() != 2 || keys.calls != 2 {
		t.Fatalf("fetches: %d (calls %d), want 2", v.Fetches(), keys.calls)
	}
	c.advance(time.Second)
	accepted(t)(v.Verify(ctx, b.sign(t, c.now, nil)))
	// Known kids need no fetch.
	accepted(t)(v.Verify(ctx, a.sign(t, c.now, nil)))
	if v.Fetches() != 3 {
		t.Fatalf("fetches: %d, want 3", v.Fetches())
	}
}

func TestTheKeySetExpiresAndAFailedFetchKeepsTheKeys(t *testing.T) {
	c := newClock()
	a, b := newKey(t, "a", jose.ES256), newKey(t, "b", jose.RS256)
	keys := &keySet{}
	keys.set(a)
	cfg := config(c)
	cfg.CacheTTL = time.Minute
	v := NewVerifier(keys.fetch, cfg)
	ctx := context.Background()
	accepted(t)(v.Verify(ctx, a.sign(t, c.now, nil)))

	// Past the TTL the set is fetched again: a retired key goes away.
	keys.set(b)
	c.advance(time.Minute)
	accepted(t)(v.Verify(ctx, b.sign(t, c.now, nil)))
	_, err := v.Verify(ctx, a.sign(t, c.now, nil))
	refused(t, err)

	// The key server fails: the cached keys still verify, and the failing
	// server is asked at most once per MinRefetchInterval.
	keys.mu.Lock()
	keys.fail = true
	keys.mu.Unlock()
	c.advance(time.Minute)
	calls := keys.calls
	for i := 0; i < 5; i++ {
		accepted(t)(v.Verify(ctx, b.sign(t, c.now, nil)))
	}
	if keys.calls != calls+1 {
		t.Fatalf("the failing key server was asked %d times, want 1", keys.calls-calls)
	}
	// An unknown kid with no answer from the key server: not an invalid
	// token, the keys are unavailable.
	_, err = v.Verify(ctx, newKey(t, "c", jose.EdDSA).sign(t, c.now, nil))
	if err == nil || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("want an error other than ErrInvalidToken, got %v", err)
	}
}

func TestClaimsAreChecked(t *testing.T) {
	c := newClock()
	a := newKey(t, "a", jose.EdDSA)
	keys := &keySet{}
	keys.set(a)
	cfg := config(c)
	cfg.TenantID = "t"
	v := NewVerifier(keys.fetch, cfg)
	now := c.now.Unix()
	cases := map[string]map[string]interface{}{
		"iss":         {"iss": "other"},
		"aud":         {"aud": "other"},
		"expired":     {"exp": now - 5},
		"not yet":     {"nbf": now + 60},
		"tid":         {"tid": "other"},
		"without exp": {"exp": nil},
		"without nbf": {"nbf": nil},
		"without sub": {"sub": nil},
		"without tid": {"tid": nil},
	}
	for name, overrides := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), a.sign(t, c.now, overrides))
			refused(t, err)
		})
	}
	// The leeway admits a token that expired within it.
	cfg.Leeway = 10 * time.Second
	lenient := NewVerifier(keys.fetch, cfg)
	accepted(t)(lenient.Verify(context.Background(), a.sign(t, c.now, map[string]interface{}{"exp": now - 5})))
	// Several audiences: ours must be one of them.
	accepted(t)(v.Verify(context.Background(), a.sign(t, c.now, map[string]interface{}{"aud": []string{"x", "aud"}})))
}

func TestTheAlgIsPinnedToTheKey(t *testing.T) {
	c := newClock()
	ed, es := newKey(t, "ed", jose.EdDSA), newKey(t, "es", jose.ES256)
	keys := &keySet{}
	keys.set(ed, es)
	v := NewVerifier(keys.fetch, config(c))
	ctx := context.Background()

	// HS256 with the public key as the secret: the classic confusion.
	public, err := json.Marshal(ed.jwk())
	if err != nil {
		t.Fatal(err)
	}
	hmac, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: jose.JSONWebKey{Key: public, KeyID: "ed"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.Signed(hmac).Claims(map[string]interface{}{"iss": "iss", "aud": "aud", "sub": "u", "tid": "t"}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(ctx, forged)
	refused(t, err)

	// A valid ES256 signature under the EdDSA key's kid.
	impostor := signingKey{kid: "ed", alg: jose.ES256, private: es.private}
	_, err = v.Verify(ctx, impostor.sign(t, c.now, nil))
	refused(t, err)

	// Garbage and a signature by an unpublished key of a known kid.
	_, err = v.Verify(ctx, "not.a.token")
	refused(t, err)
	other := newKey(t, "ed", jose.EdDSA)
	_, err = v.Verify(ctx, other.sign(t, c.now, nil))
	refused(t, err)
	accepted(t)(v.Verify(ctx, es.sign(t, c.now, nil)))
}

func TestKeysOverHTTPAndTheMiddleware(t *testing.T) {
	a := newKey(t, "a", jose.EdDSA)
	var down sync.Mutex
	failing := false
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		down.Lock()
		defer down.Unlock()
		if failing {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		if r.URL.Path != "/tenants/acme/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{a.jwk()}})
	}))
	defer jwks.Close()

	v := NewHTTPVerifier(jwks.URL+"/", VerifierConfig{Issuer: "iss", Audience: "aud", TenantID: "acme"})
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := ClaimsFrom(r.Context())
		if !ok {
			t.Error("no claims in the context")
		}
		fmt.Fprintf(w, "%s %s", claims.Subject, claims.TenantID)
	})
	app := httptest.NewServer(RequireToken(v)(me))
	defer app.Close()

	get := func(authorization string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, app.URL+"/me", nil)
		if err != nil {
			t.Fatal(err)
		}
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	now := time.Now()
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := get("Basic dTpw"); code != http.StatusUnauthorized {
		t.Fatalf("basic auth: %d", code)
	}
	if code, body := get("bearer " + a.sign(t, now, map[string]interface{}{"tid": "acme"})); code != http.StatusOK || body != "u acme" {
		t.Fatalf("a valid token: %d %q", code, body)
	}
	if code, _ := get("Bearer " + a.sign(t, now, nil)); code != http.StatusUnauthorized {
		t.Fatalf("another tenant's token: %d", code)
	}
	// An unknown kid while the key server is down: 503, not 401.
	down.Lock()
	failing = true
	down.Unlock()
	if code, _ := get("Bearer " + newKey(t, "b", jose.EdDSA).sign(t, now, map[string]interface{}{"tid": "acme"})); code != http.StatusServiceUnavailable {
		t.Fatalf("keys unavailable: %d", code)
	}
}

func TestJWKSURL(t *testing.T) {
	for _, c := range []struct{ base, tenant, want string }{
		{"http://h:8080", "", "http://h:8080/.well-known/jwks.json"},
		{"http://h:8080/", "default", "http://h:8080/.well-known/jwks.json"},
		{"https://h/auth", "a b", "https://h/auth/tenants/a%20b/.well-known/jwks.json"},
	} {
		if got := JWKSURL(c.base, c.tenant); got != c.want {
			t.Errorf("JWKSURL(%q, %q) = %q, want %q", c.base, c.tenant, got, c.want)
		}
	}
}
