package latchkey

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	jose "gopkg.in/square/go-jose.v2"
	"gopkg.in/square/go-jose.v2/jwt"

	latchkeyv1 "github.com/latchkey/latchkey/clients/go/latchkeyv1"
)

// ErrInvalidToken is the error (test with errors.Is) of a token that is not a
// valid access token for the verifier: malformed, bad signature, unknown key,
// wrong alg, expired or not yet valid, wrong iss, aud or tid. Other errors of
// Verify mean the keys could not be fetched.
var ErrInvalidToken = errors.New("latchkey: invalid access token")

func invalid(format string, args ...interface{}) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, fmt.Sprintf(format, args...))
}

// Claims are the claims of a latchkey access token.
type Claims struct {
	Issuer    string
	Audience  []string
	Subject   string // the user's id
	Email     string
	SessionID string // sid: the login session, for Revoke and ListSessions
	TenantID  string // tid
	ID        string // jti
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
}

// KeySource fetches a JWKS document (JSON, {"keys": […]}).
type KeySource func(ctx context.Context) ([]byte, error)

// VerifierConfig says which tokens a Verifier accepts.
type VerifierConfig struct {
	// Issuer and Audience must equal the token's iss and one of its aud
	// (latchkey's LATCHKEY_ISSUER and LATCHKEY_AUDIENCE, or the tenant's).
	Issuer, Audience string
	// TenantID, when set, refuses tokens of any other tenant, and picks the
	// tenant's key set for NewHTTPVerifier and NewGRPCVerifier.
	TenantID string
	// Leeway for exp and nbf (default none).
	Leeway time.Duration
	// CacheTTL: the key set is fetched again after this long (default 5 min).
	CacheTTL time.Duration
	// MinRefetchInterval: a token with an unknown kid refetches the key set at
	// once, but at most once per this interval (default 10 s), so forged kids
	// cannot flood latchkey.
	MinRefetchInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Algorithms are the signing algorithms latchkey uses, the only ones accepted.
var Algorithms = []string{"EdDSA", "ES256", "RS256"}

// Verifier checks latchkey access tokens locally: signature with the key the
// token's kid names (alg pinned to the key's type), exp, nbf, iss, aud, and
// optionally tid. Safe for concurrent use.
type Verifier struct {
	fetch KeySource
	cfg   VerifierConfig

	mu          sync.Mutex
	keys        map[string]jose.JSONWebKey
	fetchedAt   time.Time // last successful fetch
	refetchedAt time.Time // last fetch for an unknown kid
	failedAt    time.Time // last failed fetch, zero after a good one
	lastErr     error     // its error
	fetches     int
}

// NewVerifier verifies with the keys that fetch returns.
func NewVerifier(fetch KeySource, cfg VerifierConfig) *Verifier {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 5 * time.Minute
	}
	if cfg.MinRefetchInterval <= 0 {
		cfg.MinRefetchInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{fetch: fetch, cfg: cfg}
}

// NewHTTPVerifier reads the keys from latchkey's HTTP listener at baseURL
// ("https://login.example.com"): /.well-known/jwks.json, or
// /tenants/{TenantID}/.well-known/jwks.json.
func NewHTTPVerifier(baseURL string, cfg VerifierConfig) *Verifier {
	return NewVerifier(HTTPKeys(JWKSURL(baseURL, cfg.TenantID), http.DefaultClient), cfg)
}

// NewGRPCVerifier reads the keys with GetJwks over c (no API key needed).
func NewGRPCVerifier(c *Client, cfg VerifierConfig) *Verifier {
	return NewVerifier(GRPCKeys(c.Auth, cfg.TenantID), cfg)
}

// JWKSURL is the JWKS document of a tenant on latchkey's HTTP listener.
func JWKSURL(baseURL, tenantID string) string {
	base := strings.TrimRight(baseURL, "/")
	if tenantID == "" || tenantID == "default" {
		return base + "/.well-known/jwks.json"
	}
	return base + "/tenants/" + url.PathEscape(tenantID) + "/.well-known/jwks.json"
}

// HTTPKeys fetches a JWKS document with GET.
func HTTPKeys(jwksURL string, client *http.Client) KeySource {
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("latchkey: GET %s: %s", jwksURL, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
}

// GRPCKeys fetches the keys with GetJwks.
func GRPCKeys(auth latchkeyv1.AuthServiceClient, tenantID string) KeySource {
	marshal := protojson.MarshalOptions{UseProtoNames: true}
	return func(ctx context.Context) ([]byte, error) {
		reply, err := auth.GetJwks(ctx, &latchkeyv1.GetJwksRequest{TenantId: tenantID})
		if err != nil {
			return nil, err
		}
		keys := make([]json.RawMessage, 0, len(reply.GetKeys()))
		for _, key := range reply.GetKeys() {
			raw, err := marshal.Marshal(key)
			if err != nil {
				return nil, err
			}
			keys = append(keys, raw)
		}
		return json.Marshal(map[string][]json.RawMessage{"keys": keys})
	}
}

// Fetches is how many times the key set was fetched successfully.
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// load fetches the key set; on failure the previous keys stay and lastErr
// says why.
func (v *Verifier) load(ctx context.Context, now time.Time) {
	doc, err := v.fetch(ctx)
	var set jose.JSONWebKeySet
	if err == nil {
		err = json.Unmarshal(doc, &set)
	}
	if err != nil {
		v.failedAt = now
		v.lastErr = fmt.Errorf("latchkey: fetching the signing keys: %w", err)
		return
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, key := range set.Keys {
		if key.KeyID != "" && (key.Use == "" || key.Use == "sig") && key.IsPublic() {
			keys[key.KeyID] = key
		}
	}
	v.keys, v.fetchedAt, v.failedAt, v.lastErr = keys, now, time.Time{}, nil
	v.fetches++
}

func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.cfg.Now()
	// After a failed fetch, wait MinRefetchInterval before the next attempt.
	canFetch := v.failedAt.IsZero() || now.Sub(v.failedAt) >= v.cfg.MinRefetchInterval
	if v.keys == nil || now.Sub(v.fetchedAt) >= v.cfg.CacheTTL {
		if canFetch {
			v.load(ctx, now)
		}
	} else if _, known := v.keys[kid]; !known && canFetch &&
		(v.refetchedAt.IsZero() || now.Sub(v.refetchedAt) >= v.cfg.MinRefetchInterval) {
		v.refetchedAt = now
		v.load(ctx, now)
	}
	if key, ok := v.keys[kid]; ok {
		return key, nil
	}
	if v.lastErr != nil {
		// Not an invalid token: the key may be new, and the key set unreachable.
		return jose.JSONWebKey{}, v.lastErr
	}
	return jose.JSONWebKey{}, invalid("unknown signing key %q", kid)
}

// algorithmOf is the one algorithm latchkey signs with for a key's type.
func algorithmOf(key jose.JSONWebKey) string {
	switch k := key.Key.(type) {
	case ed25519.PublicKey:
		return "EdDSA"
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name == "P-256" {
			return "ES256"
		}
	case *rsa.PublicKey:
		return "RS256"
	}
	return ""
}

type privateClaims struct {
	Email    string `json:"email"`
	Session  string `json:"sid"`
	TenantID string `json:"tid"`
}

// Verify returns the claims of a valid access token. An invalid token's
// error wraps ErrInvalidToken; any other error means the keys could not be
// fetched (the token may be valid: answer 503, not 401).
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if v.cfg.Issuer == "" || v.cfg.Audience == "" {
		return nil, errors.New("latchkey: the verifier needs an Issuer and an Audience")
	}
	parsed, err := jwt.ParseSigned(token)
	if err != nil {
		return nil, invalid("%v", err)
	}
	if len(parsed.Headers) != 1 {
		return nil, invalid("one signature expected")
	}
	header := parsed.Headers[0]
	accepted := false
	for _, alg := range Algorithms {
		accepted = accepted || header.Algorithm == alg
	}
	if !accepted {
		return nil, invalid("algorithm %q is not accepted", header.Algorithm)
	}
	if header.KeyID == "" {
		return nil, invalid("the token names no signing key")
	}
	key, err := v.key(ctx, header.KeyID)
	if err != nil {
		return nil, err
	}
	if alg := algorithmOf(key); alg != header.Algorithm || (key.Algorithm != "" && key.Algorithm != alg) {
		return nil, invalid("key %q does not sign with %s", header.KeyID, header.Algorithm)
	}
	var std jwt.Claims
	var own privateClaims
	if err := parsed.Claims(key.Key, &std, &own); err != nil {
		return nil, invalid("%v", err)
	}
	if std.Expiry == nil || std.NotBefore == nil || std.Subject == "" || own.TenantID == "" {
		return nil, invalid("exp, nbf, sub and tid are required")
	}
	expected := jwt.Expected{Issuer: v.cfg.Issuer, Audience: jwt.Audience{v.cfg.Audience}, Time: v.cfg.Now()}
	if err := std.ValidateWithLeeway(expected, v.cfg.Leeway); err != nil {
		return nil, invalid("%v", err)
	}
	if v.cfg.TenantID != "" && own.TenantID != v.cfg.TenantID {
		return nil, invalid("token of tenant %q, not %q", own.TenantID, v.cfg.TenantID)
	}
	claims := &Claims{
		Issuer:    std.Issuer,
		Audience:  std.Audience,
		Subject:   std.Subject,
		Email:     own.Email,
		SessionID: own.Session,
		TenantID:  own.TenantID,
		ID:        std.ID,
		NotBefore: std.NotBefore.Time(),
		Expiry:    std.Expiry.Time(),
	}
	if std.IssuedAt != nil {
		claims.IssuedAt = std.IssuedAt.Time()
	}
	return claims, nil
}
