// Package spiffe gives a component its SPIFFE identity and uses it: the X.509 SVID it presents
// and the trust bundle it checks peers against (a Source), mutual TLS on every gRPC hop, and the
// path tokens it signs with its SVID's key.
//
// Sources:
//   - WorkloadAPI: from a SPIFFE Workload API (a SPIRE agent's socket, SPIFFE_ENDPOINT_SOCKET).
//     It follows rotations as the agent pushes them and keeps the SVID it has while the agent is
//     away (go-spiffe's X509Source).
//   - Files: from PEM files in a folder (svid.pem, svid_key.pem, bundle.pem), for a mesh without
//     SPIRE. Replaced files are read again, so rotating them works as SPIRE's rotation does; a
//     set of files that does not parse (one replaced, the other not yet) leaves the last good
//     one in use.
//   - CA: a trust domain of its own, made in memory, that issues SVIDs to sources or files: the
//     local mesh's, and every test's.
//
// ServerCredentials and ClientCredentials are gRPC transport credentials for mutual TLS from a
// Source, the peer checked to be in the trust domain of the component's own SVID (and one of
// WithAllowedIDs, if given). Certificates are asked of the source at each handshake, so a rotated
// SVID serves new connections at once while open ones go on. They pass descriptors over unix
// sockets as sdk/pkg/tools/fdpass does. PeerID names the peer of a call.
//
// Tokens signs path tokens (sdk/pkg/tools/token) with the SVID's key, each carrying its SVID's
// chain so that any hop verifies it with the trust bundle alone (token.Verifier).
package spiffe

import (
	"context"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Source gives a component's X.509 SVID and the bundles of the trust domains it trusts.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// ID returns the SPIFFE ID of src's SVID now.
func ID(src Source) (spiffeid.ID, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

// PeerCertificate returns the certificate the peer of the call ctx belongs to presented in its
// TLS handshake; false without TLS.
func PeerCertificate(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return nil, false
	}
	return tlsInfo.State.PeerCertificates[0], true
}

// PeerID returns the SPIFFE ID of the peer of the call ctx belongs to, as its certificate names
// it; false without TLS.
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	cert, ok := PeerCertificate(ctx)
	if !ok {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cert)
	return id, err == nil
}
