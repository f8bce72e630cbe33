package spiffejwt_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/spiffejwt"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var nse = spiffeid.RequireFromString("spiffe://mesh.test/nse")

// late is a source whose SVID comes only once ready is set, as a Workload API's does while its
// agent starts.
type late struct {
	spiffe.Source
	ready atomic.Bool
}

func (l *late) GetX509SVID() (*x509svid.SVID, error) {
	if !l.ready.Load() {
		return nil, errors.New("no SVID yet")
	}
	return l.Source.GetX509SVID()
}

func (l *late) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return l.Source.GetX509BundleForTrustDomain(td)
}

// TestTokensAreSignedByTheSVID: the tokens verify against the trust bundle and name the SVID;
// before the source has an SVID each token fails with Unavailable, and the same generator works
// once it has one.
func TestTokensAreSignedByTheSVID(t *testing.T) {
	ca, err := spiffe.NewCA(nse.TrustDomain())
	require.NoError(t, err)
	src, err := ca.Source(nse, time.Hour)
	require.NoError(t, err)
	l := &late{Source: src}
	gen := spiffejwt.TokenGeneratorFunc(l, 10*time.Minute)

	_, _, err = gen(nil)
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "no SVID yet")

	l.ready.Store(true)
	tok, expires, err := gen(nil)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), expires, time.Minute)
	verified, err := token.NewVerifier(ca.Bundle()).Verify(tok)
	require.NoError(t, err)
	require.Equal(t, nse, verified.Signer)
	require.Equal(t, nse.String(), verified.Claims.Subject)
}

func TestANilSourcePanics(t *testing.T) {
	require.PanicsWithValue(t, "spiffejwt.TokenGeneratorFunc: nil source", func() { spiffejwt.TokenGeneratorFunc(nil, time.Minute) })
}
