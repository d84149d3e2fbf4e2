//go:build e2e
// +build e2e

// The whole flow against the real server, through this package only. The
// server is started by clients/run-e2e.sh go (LATCHKEY_E2E_* variables).

package latchkey_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"gopkg.in/square/go-jose.v2/jwt"

	"github.com/latchkey/latchkey/clients/go/latchkey"
	latchkeyv1 "github.com/latchkey/latchkey/clients/go/latchkeyv1"
)

type server struct {
	grpc, http, apiKey, mailbox, issuer, audience, binary string
}

func serverUnderTest(t *testing.T) server {
	t.Helper()
	env := map[string]string{}
	var missing []string
	for _, name := range []string{
		"LATCHKEY_E2E_GRPC", "LATCHKEY_E2E_HTTP", "LATCHKEY_E2E_API_KEY", "LATCHKEY_E2E_MAILBOX",
		"LATCHKEY_ISSUER", "LATCHKEY_AUDIENCE", "LATCHKEY_BIN",
	} {
		env[name] = os.Getenv(name)
		if env[name] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("run these tests through clients/run-e2e.sh go (missing %s)", strings.Join(missing, ", "))
	}
	return server{
		grpc: env["LATCHKEY_E2E_GRPC"], http: env["LATCHKEY_E2E_HTTP"], apiKey: env["LATCHKEY_E2E_API_KEY"],
		mailbox: env["LATCHKEY_E2E_MAILBOX"], issuer: env["LATCHKEY_ISSUER"],
		audience: env["LATCHKEY_AUDIENCE"], binary: env["LATCHKEY_BIN"],
	}
}

var codeSubject = regexp.MustCompile(`^(\d+) is your `)

// codesFor are the codes emailed to address, oldest first (dev mailbox).
func (s server) codesFor(t *testing.T, address string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(s.mailbox, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	type found struct {
		at   time.Time
		code string
	}
	var codes []found
	decoder := new(mime.WordDecoder)
	for _, path := range paths {
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		message, err := mail.ReadMessage(file)
		if err == nil {
			to, _ := decoder.DecodeHeader(message.Header.Get("To"))
			subject, _ := decoder.DecodeHeader(message.Header.Get("Subject"))
			info, statErr := file.Stat()
			if m := codeSubject.FindStringSubmatch(subject); m != nil && strings.Contains(to, address) && statErr == nil {
				codes = append(codes, found{info.ModTime(), m[1]})
			}
		}
		file.Close()
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i].at.Before(codes[j].at) })
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = c.code
	}
	return out
}

// waitFor polls ready (the server's outbox and key reload run on their own
// schedule; there is no event to await from outside).
func waitFor(t *testing.T, what string, ready func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s server) codeFor(t *testing.T, address string) string {
	t.Helper()
	var codes []string
	waitFor(t, "the sign-in email", func() bool { codes = s.codesFor(t, address); return len(codes) > 0 })
	return codes[len(codes)-1]
}

func address(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "go-" + hex.EncodeToString(b) + "@example.com"
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(token)
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Headers[0].KeyID
}

func connect(t *testing.T, target, key string) *latchkey.Client {
	t.Helper()
	client, err := latchkey.New(target, latchkey.WithAPIKey(key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestTheWholeLoginFlow(t *testing.T) {
	s := serverUnderTest(t)
	ctx := context.Background()
	client := connect(t, s.grpc, s.apiKey)
	verifier := latchkey.NewHTTPVerifier(s.http, latchkey.VerifierConfig{Issuer: s.issuer, Audience: s.audience, TenantID: "default"})
	user := address(t)

	started, err := client.Auth.StartAuth(ctx, &latchkeyv1.StartAuthRequest{Email: user})
	if err != nil {
		t.Fatal(err)
	}
	code := s.codeFor(t, user)
	if uint32(len(code)) != started.GetCodeLength() {
		t.Fatalf("code %q, code_length %d", code, started.GetCodeLength())
	}

	wrong := strings.Repeat("0", len(code))
	if wrong == code {
		wrong = strings.Repeat("1", len(code))
	}
	_, err = client.Auth.Verify(ctx, &latchkeyv1.VerifyRequest{SessionId: started.GetSessionId(), Code: wrong})
	if latchkey.Reason(err) != "CODE_INVALID" || latchkey.Code(err) != codes.Unauthenticated {
		t.Fatalf("a wrong code: %v (reason %q)", err, latchkey.Reason(err))
	}

	verified, err := client.Auth.Verify(ctx, &latchkeyv1.VerifyRequest{SessionId: started.GetSessionId(), Code: code})
	if err != nil {
		t.Fatal(err)
	}
	if !verified.GetNewUser() || verified.GetUser().GetEmail() != user {
		t.Fatalf("verified: %v", verified)
	}

	refreshed, err := client.Auth.Refresh(ctx, &latchkeyv1.RefreshRequest{RefreshToken: verified.GetRefreshToken()})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := verifier.Verify(ctx, refreshed.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != verified.GetUser().GetId() || claims.SessionID != started.GetSessionId() ||
		claims.TenantID != "default" || claims.Email != user {
		t.Fatalf("claims: %+v", claims)
	}

	// A verifier of another audience refuses the same token.
	strict := latchkey.NewHTTPVerifier(s.http, latchkey.VerifierConfig{Issuer: s.issuer, Audience: "someone-else"})
	if _, err := strict.Verify(ctx, refreshed.GetToken()); !errors.Is(err, latchkey.ErrInvalidToken) {
		t.Fatalf("another audience: %v", err)
	}

	// Rotate the signing key: the server signs with a kid the verifier has
	// not seen, and the verifier refetches the key set once to verify it.
	oldKid := kidOf(t, refreshed.GetToken())
	fetches := verifier.Fetches()
	if out, err := exec.Command(s.binary, "keys", "rotate", "--activate-in", "0s").CombinedOutput(); err != nil {
		t.Fatalf("latchkey keys rotate: %v\n%s", err, out)
	}
	refreshToken := refreshed.GetRefreshToken()
	var rotated *latchkeyv1.RefreshResponse
	waitFor(t, "a token signed by the new key", func() bool {
		answer, err := client.Auth.Refresh(ctx, &latchkeyv1.RefreshRequest{RefreshToken: refreshToken})
		if err != nil {
			t.Fatal(err)
		}
		refreshToken = answer.GetRefreshToken()
		rotated = answer
		return kidOf(t, answer.GetToken()) != oldKid
	})
	claims, err = verifier.Verify(ctx, rotated.GetToken())
	if err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if claims.Subject != verified.GetUser().GetId() {
		t.Fatalf("claims after the rotation: %+v", claims)
	}
	if verifier.Fetches() != fetches+1 {
		t.Fatalf("the verifier fetched the keys %d times after the rotation, want 1", verifier.Fetches()-fetches)
	}

	// Logout: the refresh token stops working.
	if _, err := client.Auth.Revoke(ctx, &latchkeyv1.RevokeRequest{RefreshToken: refreshToken}); err != nil {
		t.Fatal(err)
	}
	_, err = client.Auth.Refresh(ctx, &latchkeyv1.RefreshRequest{RefreshToken: refreshToken})
	if latchkey.Reason(err) != "REFRESH_TOKEN_INVALID" {
		t.Fatalf("refresh after revoke: %v (reason %q)", err, latchkey.Reason(err))
	}
}

func TestKeysOverGRPCVerifyTheSameTokens(t *testing.T) {
	s := serverUnderTest(t)
	ctx := context.Background()
	client := connect(t, s.grpc, s.apiKey)
	user := address(t)
	started, err := client.Auth.StartAuth(ctx, &latchkeyv1.StartAuthRequest{Email: user})
	if err != nil {
		t.Fatal(err)
	}
	verified, err := client.Auth.Verify(ctx, &latchkeyv1.VerifyRequest{SessionId: started.GetSessionId(), Code: s.codeFor(t, user)})
	if err != nil {
		t.Fatal(err)
	}
	// GetJwks needs no API key.
	keyless := connect(t, s.grpc, "")
	verifier := latchkey.NewGRPCVerifier(keyless, latchkey.VerifierConfig{Issuer: s.issuer, Audience: s.audience, TenantID: "default"})
	claims, err := verifier.Verify(ctx, verified.GetToken())
	if err != nil || claims.Email != user {
		t.Fatalf("verified over gRPC keys: %+v, %v", claims, err)
	}
	// The token names its tenant: a verifier for another tenant refuses it.
	other := latchkey.NewVerifier(latchkey.GRPCKeys(keyless.Auth, ""), latchkey.VerifierConfig{Issuer: s.issuer, Audience: s.audience, TenantID: "another"})
	if _, err := other.Verify(ctx, verified.GetToken()); !errors.Is(err, latchkey.ErrInvalidToken) {
		t.Fatalf("another tenant: %v", err)
	}
}

func TestARateLimitedCallSaysWhenToRetry(t *testing.T) {
	s := serverUnderTest(t)
	client := connect(t, s.grpc, s.apiKey)
	user := address(t)
	var err error
	for i := 0; i < 10 && err == nil; i++ { // the run allows 3 emails per address
		_, err = client.Auth.StartAuth(context.Background(), &latchkeyv1.StartAuthRequest{Email: user})
	}
	if latchkey.Reason(err) != "RATE_LIMITED" || latchkey.Code(err) != codes.ResourceExhausted {
		t.Fatalf("want RATE_LIMITED, got %v", err)
	}
	wait, ok := latchkey.RetryAfter(err)
	if !ok || wait <= 0 {
		t.Fatalf("retry after: %v, %v", wait, ok)
	}
}

func TestBadInputAndBadKeysAreDecoded(t *testing.T) {
	s := serverUnderTest(t)
	ctx := context.Background()
	_, err := connect(t, s.grpc, s.apiKey).Auth.StartAuth(ctx, &latchkeyv1.StartAuthRequest{Email: "not an address"})
	if latchkey.Reason(err) != "INVALID_ARGUMENT" || latchkey.Field(err) != "email" {
		t.Fatalf("bad input: %v (reason %q, field %q)", err, latchkey.Reason(err), latchkey.Field(err))
	}
	// Wrapped errors are decoded too.
	wrapped := fmt.Errorf("logging in: %w", err)
	if latchkey.Reason(wrapped) != "INVALID_ARGUMENT" || latchkey.Code(wrapped) != codes.InvalidArgument {
		t.Fatalf("a wrapped error: %v", wrapped)
	}

	_, err = connect(t, s.grpc, "lk_app_nope_nope").Auth.StartAuth(ctx, &latchkeyv1.StartAuthRequest{Email: address(t)})
	if latchkey.Reason(err) != "UNAUTHENTICATED" || latchkey.Code(err) != codes.Unauthenticated {
		t.Fatalf("an unknown key: %v", err)
	}
	// Every reason the server sent is a value of the proto's ErrorReason.
	for _, reason := range []string{"CODE_INVALID", "RATE_LIMITED", "INVALID_ARGUMENT", "UNAUTHENTICATED", "REFRESH_TOKEN_INVALID"} {
		if _, ok := latchkeyv1.ErrorReason_value["ERROR_REASON_"+reason]; !ok {
			t.Errorf("ErrorReason has no value for %s", reason)
		}
	}
	// A connection failure has no reason, and its code says so.
	_, err = connect(t, "127.0.0.1:1", s.apiKey).Auth.StartAuth(ctx, &latchkeyv1.StartAuthRequest{Email: address(t)})
	if latchkey.Reason(err) != "" || latchkey.Code(err) != codes.Unavailable {
		t.Fatalf("no server: %v", err)
	}
}
