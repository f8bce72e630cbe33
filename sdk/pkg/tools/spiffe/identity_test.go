package spiffe_test

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestConfigLoad(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, td)
	dir := t.TempDir()
	require.NoError(t, ca.WriteFiles(dir, nsc, time.Hour))

	for name, tc := range map[string]struct {
		config spiffe.Config
		err    string
	}{
		"nothing":         {spiffe.Config{}, "SPIFFE_ENDPOINT_SOCKET: no identity: set SPIFFE_ENDPOINT_SOCKET"},
		"two":             {spiffe.Config{IdentityDir: dir, Insecure: true}, "NSM_IDENTITY_DIR and NSM_INSECURE are set"},
		"missing files":   {spiffe.Config{IdentityDir: t.TempDir()}, "NSM_IDENTITY_DIR"},
		"not an address":  {spiffe.Config{SpiffeEndpointSocket: "/run/agent.sock"}, "use unix:///path/to/agent.sock"},
		"agent not there": {spiffe.Config{SpiffeEndpointSocket: "unix:///nonexistent/agent.sock"}, "SPIFFE_ENDPOINT_SOCKET=unix:///nonexistent/agent.sock"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err := tc.config.Load(ctx)
			if name == "agent not there" && err == context.DeadlineExceeded {
				return // the test's own deadline came before the Workload API wait's
			}
			require.ErrorContains(t, err, tc.err)
		})
	}

	insecure, err := spiffe.Config{Insecure: true}.Load(ctx)
	require.NoError(t, err)
	require.True(t, insecure.Insecure())
	require.Empty(t, insecure.ServerOptions())
	gen, err := insecure.Tokens("nsc-1", time.Minute)
	require.NoError(t, err)
	tok, _, err := gen(nil)
	require.NoError(t, err)
	_, err = token.NewVerifier(ca.Bundle()).Verify(tok)
	require.Error(t, err, "insecure tokens prove nothing")

	files, err := spiffe.Config{IdentityDir: dir}.Load(ctx)
	require.NoError(t, err)
	defer files.Close()
	require.False(t, files.Insecure())
	require.Equal(t, nsc, files.ID())
	require.Len(t, files.ServerOptions(), 1)
	require.Len(t, files.DialOptions(), 1)
	gen, err = files.Tokens("nsc-1", time.Minute)
	require.NoError(t, err)
	tok, _, err = gen(nil)
	require.NoError(t, err)
	got, err := token.NewVerifier(ca.Bundle()).Verify(tok)
	require.NoError(t, err)
	require.Equal(t, nsc, got.Signer)
}

func TestAllowedPeers(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, td)
	dir := t.TempDir()
	require.NoError(t, ca.WriteFiles(dir, nsmgr, time.Hour))
	id, err := spiffe.Config{IdentityDir: dir, AllowedPeers: spiffe.IDs{nsc}}.Load(ctx)
	require.NoError(t, err)
	defer id.Close()

	serving, cancel := context.WithCancel(ctx)
	sock := filepath.Join(t.TempDir(), "s.sock")
	done, err := grpcserve.Serve(serving, &url.URL{Scheme: "unix", Path: sock}, grpcserve.RegistrarFunc(func(*grpc.Server) {}), id.ServerOptions()...)
	require.NoError(t, err)
	defer func() {
		cancel()
		for range done {
		}
	}()
	require.NoError(t, check(t, "unix://"+sock, spiffe.ClientCredentials(source(t, ca, nsc))), "an allowed peer")
	require.Error(t, check(t, "unix://"+sock, spiffe.ClientCredentials(source(t, ca, spiffeid.RequireFromPath(td, "/other")))), "a peer of the trust domain, not allowed")

	_, err = spiffe.Config{Insecure: true, AllowedPeers: spiffe.IDs{nsc}}.Load(ctx)
	require.ErrorContains(t, err, "NSM_ALLOWED_PEERS")
	var ids spiffe.IDs
	require.ErrorContains(t, ids.Decode("spiffe://mesh.test/a,mesh.test/b"), "not a SPIFFE ID")
}
