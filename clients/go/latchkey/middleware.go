package latchkey

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

type claimsKey struct{}

// ClaimsFrom returns the claims that RequireToken put in the request's
// context.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	claims, ok := ctx.Value(claimsKey{}).(*Claims)
	return claims, ok
}

// RequireToken is an http.Handler middleware: a request reaches next only with
// `Authorization: Bearer <a valid access token>`, and next finds the claims
// with ClaimsFrom. Others get 401 (no or an invalid token), or 503 when the
// keys cannot be fetched.
func RequireToken(v *Verifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
			if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
				w.Header().Set("WWW-Authenticate", "Bearer")
				http.Error(w, "a bearer token is required", http.StatusUnauthorized)
				return
			}
			claims, err := v.Verify(r.Context(), strings.TrimSpace(token))
			if errors.Is(err, ErrInvalidToken) {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, "invalid access token", http.StatusUnauthorized)
				return
			}
			if err != nil {
				http.Error(w, "cannot check the access token now", http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
		})
	}
}
