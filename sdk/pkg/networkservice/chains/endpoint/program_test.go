package endpoint_test

import (
	"context"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

// TestExampleProgram runs the example program (example_program_test.go) against a real nsmgr
// and registry over unix sockets: it registers itself and its service, a client's Request
// through the nsmgr gets an address pair from NSM_CIDR_PREFIX, an nsmgr that restarted has it
// again, and at the stop it is unregistered and its socket is gone.
func TestExampleProgram(t *testing.T) {
	mesh := sandbox.New(t, 1, sandbox.Insecure())
	node := mesh.Nodes[0]
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	listenOn := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	for name, value := range map[string]string{
		"NSM_INSECURE":      "true",
		"NSM_NAME":          "nse-1",
		"NSM_SERVICE_NAMES": "svc-1",
		"NSM_CIDR_PREFIX":   "10.60.0.0/24",
		"NSM_LISTEN_ON":     listenOn.String(),
		"NSM_CONNECT_TO":    node.NSMgr.URL.String(),
	} {
		t.Setenv(name, value)
	}
	c := &config{}
	require.NoError(t, envconfig.Process(c))
	ctx, stop := context.WithCancel(mesh.Context())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(ctx, c) }()

	nsc := node.NewClient("nsc")
	// served waits until a Request through the nsmgr is answered, then checks the answer here, on
	// the test's goroutine (Eventually calls its condition on another).
	served := func(what string) {
		t.Helper()
		var conn *networkservice.Connection
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var err error
			conn, err = nsc.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{NetworkService: "svc-1"}})
			return err == nil
		}, 10*time.Second, 10*time.Millisecond, what)
		_, err := nsc.Close(ctx, conn)
		require.NoError(t, err)
		require.Equal(t, "nse-1", conn.GetNetworkServiceEndpointName())
		require.NotEmpty(t, conn.GetContext().GetIpContext().GetSrcIpAddrs())
		src := netip.MustParsePrefix(conn.GetContext().GetIpContext().GetSrcIpAddrs()[0])
		require.True(t, netip.MustParsePrefix("10.60.0.0/24").Contains(src.Addr()), "%s from NSM_CIDR_PREFIX", src)
	}
	served("registered and served through the nsmgr")
	require.Len(t, mesh.FindEndpoints(ctx, "nse-1"), 1)

	node.NSMgr.Restart()
	served("registered again at the restarted nsmgr")

	stop()
	require.NoError(t, <-done)
	require.Empty(t, mesh.FindEndpoints(mesh.Context(), "nse-1"), "unregistered at the stop")
	_, err = os.Stat(listenOn.Path)
	require.ErrorIs(t, err, os.ErrNotExist, "serving has ended")
}
