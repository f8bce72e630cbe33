// Package spiffejwt is where an NSM author finds the token generator of a SPIFFE identity:
// TokenGeneratorFunc, with NSM's signature, gives the path tokens of spiffe.Tokens (signed with
// the SVID's key, carrying its chain, sub the SVID's SPIFFE ID, aud the peer's).
//
// spiffe.Tokens returns an error when the source has no SVID yet; NSM's signature has no error,
// so TokenGeneratorFunc tries again at each token until the source has one, and until then each
// token fails with Unavailable naming the cause (the Workload API's agent not answering yet).
// New code calls spiffe.Tokens, or Identity.Tokens, and handles the error at start.
package spiffejwt

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// TokenGeneratorFunc returns a generator of tokens lasting lifetime signed with src's SVID.
func TokenGeneratorFunc(src spiffe.Source, lifetime time.Duration) token.GeneratorFunc {
	if src == nil {
		panic("spiffejwt.TokenGeneratorFunc: nil source")
	}
	var mu sync.Mutex
	var gen token.GeneratorFunc
	return func(authInfo credentials.AuthInfo) (string, time.Time, error) {
		mu.Lock()
		if gen == nil {
			g, err := spiffe.Tokens(src, lifetime)
			if err != nil {
				mu.Unlock()
				return "", time.Time{}, status.Errorf(codes.Unavailable, "spiffejwt: no token yet: %v", err)
			}
			gen = g
		}
		g := gen
		mu.Unlock()
		return g(authInfo)
	}
}
