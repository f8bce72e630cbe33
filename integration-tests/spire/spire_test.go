package spire

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWorkloadAPI: this test's own program gets no SVID while only another path is registered;
// registered by its own path, it gets an SVID of the trust domain from the agent through
// go-spiffe, as vwire's components do; the short lifetime makes
// the agent rotate it; while the agent is stopped the Workload API refuses and the source keeps
// the SVID it has; after the agent is back a new fetch succeeds and the source gets rotations
// again.
func TestWorkloadAPI(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("spire-test.vwire")
	const ttl = 6 * time.Second
	s := Start(t, Options{TrustDomain: td, X509SVIDTTL: ttl})
	self, err := os.Executable()
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(td, "/integration-tests/spire")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	s.RegisterBinary(t, spiffeid.RequireFromPath(td, "/elsewhere"), self+".other")
	_, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(s.Endpoint()))
	require.Error(t, err, "no SVID for a program no entry names")
	s.RegisterBinary(t, id, self)
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(s.Endpoint())))
	require.NoError(t, err)
	defer func() { require.NoError(t, source.Close()) }()

	first, err := source.GetX509SVID()
	require.NoError(t, err)
	require.Equal(t, id, first.ID)
	require.LessOrEqual(t, time.Until(first.Certificates[0].NotAfter), ttl, "the SVID lives Options.X509SVIDTTL")
	verified, _, err := x509svid.Verify(first.Certificates, source)
	require.NoError(t, err, "the SVID verifies against the agent's bundle")
	require.Equal(t, id, verified)

	rotated := func(than *x509svid.SVID) func() bool {
		return func() bool {
			now, err := source.GetX509SVID()
			return err == nil && now.Certificates[0].SerialNumber.Cmp(than.Certificates[0].SerialNumber) != 0
		}
	}
	require.Eventually(t, rotated(first), 2*ttl, 20*time.Millisecond, "the agent rotates the SVID at half its lifetime")

	s.StopAgent(t)
	_, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(s.Endpoint()))
	require.Error(t, err, "no Workload API while the agent is stopped")
	kept, err := source.GetX509SVID()
	require.NoError(t, err, "the source keeps its SVID while the agent is away")
	require.Equal(t, id, kept.ID)

	s.StartAgent(t)
	again, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(s.Endpoint()))
	require.NoError(t, err, "the restarted agent serves with the SVID and bundle it kept")
	require.Equal(t, id, again.ID)
	require.Eventually(t, rotated(kept), 2*ttl, 20*time.Millisecond, "the source reconnected and gets rotations again")
}

// TestMissingPrograms: a bin folder without SPIRE's programs is an error that says how to build
// them.
func TestMissingPrograms(t *testing.T) {
	_, err := binDir(t.TempDir())
	require.ErrorContains(t, err, "make spire-bins")
}
