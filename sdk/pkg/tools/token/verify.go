package token

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"vwire.dev/sdk/pkg/tools/lru"
)

// Verified is what a Verifier learned of a token: who signed it, as its certificate chain and the
// trust bundle prove, and its claims, whose sub is that signer.
type Verified struct {
	Signer spiffeid.ID
	Claims jwt.RegisteredClaims
}

// Verifier checks tokens made by NewSigned with an SVID: the x5c chain of the token's header
// chains up to the trust bundle of its trust domain (and is valid now), the token is signed by
// the leaf's key, and its sub is the leaf's SPIFFE ID. It does not judge the claims' times or
// audience: that is the policies' job, which need the claims even of an expired token (Close).
//
// A token's verdict never changes but for certificates expiring, so a Verifier remembers the
// verdicts of the verifyCacheSize tokens it used last: a hop sees the same tokens again and again
// (every refresh, every connection of a peer within a second), and each costs a signature check
// once. A new token of a known signer costs only its signature: the signers' certificate chains,
// which change with each SVID rotation rather than each second, are verified once and trusted
// for up to chainRecheck (or until a certificate of the chain expires, if sooner), so that a
// trust bundle losing an authority is noticed within that time. Safe for concurrent use.
type Verifier struct {
	bundles x509bundle.Source
	verdict *lru.Cache[string, verdict] // by token
	chains  *lru.Cache[string, signer]  // by x5c header, its items joined
}

// signer is a verified x5c chain: whose SVID it is and its key.
type signer struct {
	id    spiffeid.ID
	key   any
	until time.Time // verify the chain again from then on
}

// chainRecheck bounds how long a verified chain is trusted without verifying it again.
const chainRecheck = time.Minute

type verdict struct {
	v   Verified
	err error
}

// verifyCacheSize bounds how many tokens' verdicts a Verifier remembers.
const verifyCacheSize = 4096

// NewVerifier returns a Verifier of tokens against bundles.
func NewVerifier(bundles x509bundle.Source) *Verifier {
	if bundles == nil {
		panic("token: NewVerifier needs a trust bundle source")
	}
	return &Verifier{bundles: bundles, verdict: lru.New[string, verdict](verifyCacheSize), chains: lru.New[string, signer](verifyCacheSize)}
}

// methods are the algorithms NewSigned signs with.
var methods = jwt.WithValidMethods([]string{"ES256", "ES384", "ES512", "RS256", "EdDSA"})

// Verify returns who signed tok and its claims, or why it cannot be trusted.
func (v *Verifier) Verify(tok string) (Verified, error) {
	got, ok := v.verdict.Get(tok)
	if !ok {
		got.v, got.err = v.verify(tok)
		v.verdict.Add(tok, got)
	}
	return got.v, got.err
}

func (v *Verifier) verify(tok string) (Verified, error) {
	var (
		signer spiffeid.ID
		claims jwt.RegisteredClaims
	)
	_, err := jwt.ParseWithClaims(tok, &claims, func(t *jwt.Token) (any, error) {
		s, err := v.chain(t.Header["x5c"])
		if err != nil {
			return nil, err
		}
		signer = s.id
		return s.key, nil
	}, methods, jwt.WithoutClaimsValidation())
	if err != nil {
		return Verified{}, fmt.Errorf("token: %w", err)
	}
	if claims.Subject != signer.String() {
		return Verified{}, fmt.Errorf("token: signed by %s but its sub claim is %q", signer, claims.Subject)
	}
	return Verified{Signer: signer, Claims: claims}, nil
}

// chain returns the signer whose certificates a token's x5c header holds, verified against the
// trust bundle now or less than chainRecheck ago.
func (v *Verifier) chain(header any) (signer, error) {
	var key strings.Builder
	if list, ok := header.([]any); ok {
		for _, item := range list {
			s, _ := item.(string)
			key.WriteString(s)
			key.WriteByte(',') // no base64 character
		}
	}
	now := time.Now() // as x509svid.Verify judges certificates
	if s, ok := v.chains.Get(key.String()); ok && now.Before(s.until) {
		return s, nil
	}
	chain, err := x5c(header)
	if err != nil {
		return signer{}, err
	}
	id, verified, err := x509svid.Verify(chain, v.bundles)
	if err != nil {
		return signer{}, fmt.Errorf("its x5c certificates are not an SVID of a trusted domain: %w", err)
	}
	s := signer{id: id, key: chain[0].PublicKey, until: now.Add(chainRecheck)}
	for _, c := range verified[0] {
		if c.NotAfter.Before(s.until) {
			s.until = c.NotAfter
		}
	}
	v.chains.Add(key.String(), s)
	return s, nil
}

// x5c decodes a token's x5c header: standard base64 DER certificates, leaf first.
func x5c(header any) ([]*x509.Certificate, error) {
	list, ok := header.([]any)
	if !ok || len(list) == 0 {
		return nil, errors.New("it has no x5c header with its signer's certificates")
	}
	chain := make([]*x509.Certificate, 0, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("x5c item %d is not a string", i)
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("x5c item %d is not base64: %w", i, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("x5c item %d: %w", i, err)
		}
		chain = append(chain, cert)
	}
	return chain, nil
}
