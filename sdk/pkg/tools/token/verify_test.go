package token_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
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

// TestVerifierAlgorithms verifies tokens of SVIDs of every key type NewSigned signs with, and
// refuses each with its signature changed.
func TestVerifierAlgorithms(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("mesh.test")
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caCert := certificate(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), URIs: []*url.URL{td.ID().URL()},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, caKey.Public(), caKey)
	verifier := token.NewVerifier(x509bundle.FromX509Authorities(td, []*x509.Certificate{caCert}))
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for alg, key := range map[string]crypto.Signer{
		"ES256": must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)),
		"ES384": must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)),
		"ES512": must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader)),
		"RS256": must(rsa.GenerateKey(rand.Reader, 2048)),
		"EdDSA": edKey,
	} {
		t.Run(alg, func(t *testing.T) {
			id := spiffeid.RequireFromPath(td, "/"+strings.ToLower(alg))
			leaf := certificate(t, &x509.Certificate{
				SerialNumber: big.NewInt(2), URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
			}, caCert, key.Public(), caKey)
			gen := token.NewSigned(func() (crypto.Signer, []*x509.Certificate, error) {
				return key, []*x509.Certificate{leaf}, nil
			}, id.String(), time.Minute)
			tok, _, err := gen(nil)
			require.NoError(t, err)
			require.Equal(t, alg, jwtAlg(t, tok))
			got, err := verifier.Verify(tok)
			require.NoError(t, err)
			require.Equal(t, id, got.Signer)

			parts := strings.Split(tok, ".")
			other, _, err := gen(nil) // the same claims; flip a bit of the signature instead
			require.NoError(t, err)
			require.Equal(t, tok, other)
			sig := []byte(parts[2])
			sig[len(sig)/2] ^= 1
			_, err = verifier.Verify(parts[0] + "." + parts[1] + "." + string(sig))
			require.Error(t, err)
		})
	}
}

// certificate makes a certificate from tmpl for pub, signed by parent (itself when nil) with key.
func certificate(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	require.NoError(t, err)
	return must(x509.ParseCertificate(der))
}

func jwtAlg(t *testing.T, tok string) string {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{})
	require.NoError(t, err)
	return parsed.Method.Alg()
}
