package monitor

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzSubject feeds any token to subject: never a panic, and for every token the JWT library
// reads, the same sub claim.
func FuzzSubject(f *testing.F) {
	for _, seed := range []string{"", "a.b.c", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9tZXNoLnRlc3QvbnNjIn0.sig", "x.eyJzdWIiOjV9.y", "..", "a.!!.b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		got := subject(tok)
		var claims jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err == nil && got != claims.Subject {
			t.Fatalf("subject(%q) = %q, the JWT library reads %q", tok, got, claims.Subject)
		}
	})
}
