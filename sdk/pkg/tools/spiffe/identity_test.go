package spiffe_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
