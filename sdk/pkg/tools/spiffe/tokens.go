package spiffe

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"vwire.dev/sdk/pkg/tools/token"
)

// Tokens returns a generator of path tokens lasting lifetime, signed with the key of src's SVID
// at each signature (a rotation is followed from the next second on) and carrying its chain;
// their sub is the SVID's SPIFFE ID, their aud the peer's (unless opts set it).
func Tokens(src Source, lifetime time.Duration, opts ...token.Option) (token.GeneratorFunc, error) {
	id, err := ID(src)
	if err != nil {
		return nil, fmt.Errorf("spiffe: tokens need an SVID: %w", err)
	}
	key := func() (crypto.Signer, []*x509.Certificate, error) {
		svid, err := src.GetX509SVID()
		if err != nil {
			return nil, nil, err
		}
		return svid.PrivateKey, svid.Certificates, nil
	}
	return token.NewSigned(key, id.String(), lifetime, opts...), nil
}
