// An HTTP service whose /me route needs a valid latchkey access token.
//
//	go run ./examples/httpserver   (then: curl -H "Authorization: Bearer $TOKEN" localhost:3000/me)
package main

import (
	"encoding/json"
	"log"
	"net/http"

	"github.com/latchkey/latchkey/clients/go/latchkey"
)

func main() {
	verifier := latchkey.NewHTTPVerifier("http://127.0.0.1:8080", latchkey.VerifierConfig{
		Issuer: "latchkey", Audience: "latchkey", TenantID: "default",
	})
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := latchkey.ClaimsFrom(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"user_id": claims.Subject, "email": claims.Email})
	})
	mux := http.NewServeMux()
	mux.Handle("/me", latchkey.RequireToken(verifier)(me))
	log.Fatal(http.ListenAndServe("127.0.0.1:3000", mux))
}
