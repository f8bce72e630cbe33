package spiffe_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"

	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	td    = spiffeid.RequireTrustDomainFromString("mesh.test")
	other = spiffeid.RequireTrustDomainFromString("other.test")
	nsmgr = spiffeid.RequireFromPath(td, "/nsmgr")
	nsc   = spiffeid.RequireFromPath(td, "/nsc")
)

func newCA(t *testing.T, td spiffeid.TrustDomain) *spiffe.CA {
	t.Helper()
	ca, err := spiffe.NewCA(td)
	require.NoError(t, err)
	return ca
}

func source(t *testing.T, ca *spiffe.CA, id spiffeid.ID) spiffe.Source {
	t.Helper()
	src, err := ca.Source(id, time.Hour)
	require.NoError(t, err)
	return src
}

func TestIssuedSVIDsVerify(t *testing.T) {
	ca := newCA(t, td)
	svid, err := ca.Issue(nsc, time.Hour)
	require.NoError(t, err)
	got, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	require.NoError(t, err)
	require.Equal(t, nsc, got)

	_, _, err = x509svid.Verify(svid.Certificates, newCA(t, td).Bundle())
	require.Error(t, err, "an SVID verifies only against its own CA")

	_, err = ca.Issue(spiffeid.RequireFromPath(other, "/nsc"), time.Hour)
	require.ErrorContains(t, err, `not in trust domain mesh.test`)
}

// serve runs a gRPC server with the health service and ServerCredentials(src) on a unix socket;
// each call's peer ID is sent to peers.
func serve(t *testing.T, src spiffe.Source, opts ...spiffe.Option) (addr string, peers <-chan spiffeid.ID) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	ids := make(chan spiffeid.ID, 16)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "s.sock")}
	done, err := grpcserve.Serve(ctx, u, grpcserve.RegistrarFunc(func(*grpc.Server) {}),
		grpc.Creds(spiffe.ServerCredentials(src, opts...)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if id, ok := spiffe.PeerID(ctx); ok {
				ids <- id
			}
			return h(ctx, req)
		}))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range done {
		}
		_ = os.RemoveAll(dir)
	})
	return "unix://" + u.Path, ids
}

func check(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	return err
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, td)
	addr, peers := serve(t, source(t, ca, nsmgr))

	require.NoError(t, check(t, addr, spiffe.ClientCredentials(source(t, ca, nsc))))
	require.Equal(t, nsc, <-peers, "the server sees the client's SPIFFE ID")

	require.Error(t, check(t, addr, insecure.NewCredentials()), "a client without TLS")
	require.Error(t, check(t, addr, spiffe.ClientCredentials(source(t, newCA(t, td), nsc))), "a client whose SVID another CA of the same name signed")
	foreign := newCA(t, other)
	require.Error(t, check(t, addr, spiffe.ClientCredentials(source(t, foreign, spiffeid.RequireFromPath(other, "/nsc")))), "a client of another trust domain")
	require.Empty(t, peers, "no refused client reached a handler")
}

func TestAllowedIDs(t *testing.T) {
	ca := newCA(t, td)
	addr, _ := serve(t, source(t, ca, nsmgr), spiffe.WithAllowedIDs(nsc))
	require.NoError(t, check(t, addr, spiffe.ClientCredentials(source(t, ca, nsc))))
	require.Error(t, check(t, addr, spiffe.ClientCredentials(source(t, ca, spiffeid.RequireFromPath(td, "/intruder")))))

	// The client checks the server too.
	addr, _ = serve(t, source(t, ca, spiffeid.RequireFromPath(td, "/impostor")))
	require.Error(t, check(t, addr, spiffe.ClientCredentials(source(t, ca, nsc), spiffe.WithAllowedIDs(nsmgr))))
}

func TestFilesFollowRotation(t *testing.T) {
	ca := newCA(t, td)
	dir := t.TempDir()
	_, err := spiffe.Files(dir)
	require.ErrorContains(t, err, dir, "no files yet")

	require.NoError(t, ca.WriteFiles(dir, nsc, time.Hour))
	files, err := spiffe.Files(dir)
	require.NoError(t, err)
	first, err := files.GetX509SVID()
	require.NoError(t, err)
	require.Equal(t, nsc, first.ID)
	bundle, err := files.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	require.True(t, bundle.Equal(ca.Bundle()))
	_, err = files.GetX509BundleForTrustDomain(other)
	require.Error(t, err)

	// A server serving with the files keeps serving across a rotation, with the new SVID.
	addr, _ := serve(t, files)
	client := spiffe.ClientCredentials(source(t, ca, nsmgr))
	require.NoError(t, check(t, addr, client))

	// A key that does not match the certificate (a rotation half written) is not taken.
	other, err := ca.Issue(nsc, time.Hour)
	require.NoError(t, err)
	_, key, err := other.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, spiffe.KeyFile), key, 0o600))
	require.Never(t, func() bool {
		svid, err := files.GetX509SVID()
		return err != nil || !svid.Certificates[0].Equal(first.Certificates[0])
	}, 1200*time.Millisecond, 100*time.Millisecond, "a broken set leaves the last good one in use")

	require.NoError(t, ca.WriteFiles(dir, nsc, time.Hour))
	require.Eventually(t, func() bool {
		svid, err := files.GetX509SVID()
		return err == nil && !svid.Certificates[0].Equal(first.Certificates[0])
	}, 5*time.Second, 50*time.Millisecond, "the rotated SVID is taken")
	require.NoError(t, check(t, addr, client))
}

func TestCASavedAndLoaded(t *testing.T) {
	ca := newCA(t, td)
	dir := t.TempDir()
	require.NoError(t, ca.SaveCA(dir))
	again, err := spiffe.LoadCA(dir)
	require.NoError(t, err)
	require.Equal(t, td, again.TrustDomain())
	svid, err := again.Issue(nsc, time.Hour)
	require.NoError(t, err)
	_, _, err = x509svid.Verify(svid.Certificates, ca.Bundle())
	require.NoError(t, err, "the loaded CA is the same CA")

	_, err = spiffe.LoadCA(t.TempDir())
	require.ErrorContains(t, err, spiffe.CACertFile)
}

func TestTokensVerify(t *testing.T) {
	ca := newCA(t, td)
	gen, err := spiffe.Tokens(source(t, ca, nsc), time.Minute, token.WithAudience(nsmgr.String()))
	require.NoError(t, err)
	tok, _, err := gen(nil)
	require.NoError(t, err)

	got, err := token.NewVerifier(ca.Bundle()).Verify(tok)
	require.NoError(t, err)
	require.Equal(t, nsc, got.Signer)
	require.Equal(t, nsc.String(), got.Claims.Subject)
	require.Equal(t, []string{nsmgr.String()}, []string(got.Claims.Audience))

	_, err = token.NewVerifier(newCA(t, td).Bundle()).Verify(tok)
	require.Error(t, err, "a token of another CA's SVID")
}
