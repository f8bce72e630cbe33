package spiffe

import (
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/credentials"

	"vwire.dev/sdk/pkg/tools/fdpass"
)

// Option narrows which peers ServerCredentials and ClientCredentials accept.
type Option func(*tlsOptions)

type tlsOptions struct {
	allowed []spiffeid.ID
}

// WithAllowedIDs accepts only peers with one of ids (in the trust domain still).
func WithAllowedIDs(ids ...spiffeid.ID) Option {
	return func(o *tlsOptions) { o.allowed = append(o.allowed, ids...) }
}

// ServerCredentials returns mutual-TLS credentials for a gRPC server: it presents src's SVID and
// accepts clients with an SVID of its own trust domain, chained to src's bundle.
func ServerCredentials(src Source, opts ...Option) credentials.TransportCredentials {
	return fdpass.Credentials(credentials.NewTLS(tlsconfig.MTLSServerConfig(src, src, authorizer(src, opts))))
}

// ClientCredentials returns mutual-TLS credentials for a gRPC client: it presents src's SVID and
// accepts servers with an SVID of its own trust domain, chained to src's bundle.
func ClientCredentials(src Source, opts ...Option) credentials.TransportCredentials {
	return fdpass.Credentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(src, src, authorizer(src, opts))))
}

// authorizer accepts a peer (whose chain go-spiffe has verified against its domain's bundle)
// in the trust domain of src's SVID at the time of the handshake, and among the allowed IDs if
// some are given.
func authorizer(src Source, opts []Option) tlsconfig.Authorizer {
	o := &tlsOptions{}
	for _, opt := range opts {
		opt(o)
	}
	return func(peer spiffeid.ID, _ [][]*x509.Certificate) error {
		own, err := ID(src)
		if err != nil {
			return fmt.Errorf("spiffe: no SVID of our own to check %s against: %w", peer, err)
		}
		if !peer.MemberOf(own.TrustDomain()) {
			return fmt.Errorf("spiffe: peer %s is not in trust domain %s", peer, own.TrustDomain())
		}
		if len(o.allowed) > 0 && !slices.Contains(o.allowed, peer) {
			return fmt.Errorf("spiffe: peer %s is not one of the allowed %v", peer, o.allowed)
		}
		return nil
	}
}
