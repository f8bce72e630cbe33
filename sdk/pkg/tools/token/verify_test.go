package token_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestVerifier(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("mesh.test")
	nsc := spiffeid.RequireFromPath(td, "/nsc")
	ca, err := spiffe.NewCA(td)
	require.NoError(t, err)
	src, err := ca.Source(nsc, time.Hour)
	require.NoError(t, err)
	gen, err := spiffe.Tokens(src, time.Minute)
	require.NoError(t, err)
	good, _, err := gen(nil)
	require.NoError(t, err)
	verifier := token.NewVerifier(ca.Bundle())

	got, err := verifier.Verify(good)
	require.NoError(t, err)
	require.Equal(t, nsc, got.Signer)

	// A token signed by a key of its own, claiming nsc, without a certificate.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	forged, _, err := token.NewJWT(key, nsc.String(), time.Minute)(nil)
	require.NoError(t, err)

	// nsc's certificates in front of a signature by another key.
	parts := strings.Split(good, ".")
	forgedParts := strings.Split(forged, ".")
	swapped := parts[0] + "." + parts[1] + "." + forgedParts[2]

	// A token of an SVID of another CA naming the same ID.
	stranger, err := spiffe.NewCA(td)
	require.NoError(t, err)
	strangerSrc, err := stranger.Source(nsc, time.Hour)
	require.NoError(t, err)
	strangerGen, err := spiffe.Tokens(strangerSrc, time.Minute)
	require.NoError(t, err)
	foreign, _, err := strangerGen(nil)
	require.NoError(t, err)

	// nsc's own key and certificate, claiming to be another hop.
	svid, err := src.GetX509SVID()
	require.NoError(t, err)
	impostor, _, err := token.NewSigned(func() (crypto.Signer, []*x509.Certificate, error) {
		return svid.PrivateKey, svid.Certificates, nil
	}, "spiffe://mesh.test/nsmgr", time.Minute)(nil)
	require.NoError(t, err)

	for name, tok := range map[string]string{
		"sub is not the signer":  impostor,
		"no x5c":                 forged,
		"signature of other key": swapped,
		"another CA":             foreign,
		"not a JWT":              "x.y.z",
		"empty":                  "",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verifier.Verify(tok)
			require.Error(t, err)
			_, again := verifier.Verify(tok)
			require.Equal(t, err, again, "the verdict is remembered")
		})
	}
}

// BenchmarkVerify measures what a hop pays for a token of a signer it has not seen (chain and
// signature checked), for a new token of a signer it knows (the signature only: a new token
// every second is what a hop gets of each peer), and for the same token again (a cache lookup),
// ES256 tokens of an SVID with its chain in x5c as spiffe.Tokens makes them.
func BenchmarkVerify(b *testing.B) {
	td := spiffeid.RequireTrustDomainFromString("mesh.test")
	ca, err := spiffe.NewCA(td)
	require.NoError(b, err)
	src, err := ca.Source(spiffeid.RequireFromPath(td, "/nsc"), time.Hour)
	require.NoError(b, err)
	gen, err := spiffe.Tokens(src, time.Minute, token.WithAudience("spiffe://mesh.test/nsmgr"))
	require.NoError(b, err)
	tok, _, err := gen(nil)
	require.NoError(b, err)
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := token.NewVerifier(ca.Bundle()).Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new token of a known signer", func(b *testing.B) {
		tokens := make([]string, 2*4096) // more than the Verifier remembers
		for i := range tokens {
			gen, err := spiffe.Tokens(src, time.Minute, token.WithClock(clock.NewFake(time.Unix(int64(i), 0))))
			require.NoError(b, err)
			tokens[i], _, err = gen(nil)
			require.NoError(b, err)
		}
		v := token.NewVerifier(ca.Bundle())
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := v.Verify(tokens[i%len(tokens)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("cached", func(b *testing.B) {
		v := token.NewVerifier(ca.Bundle())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
