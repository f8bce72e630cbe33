package check_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk/pkg/tools/fdpass"

	"vwire.dev/cmd-vwctl/internal/check"
	"vwire.dev/cmd-vwctl/internal/inspect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// namespace makes a named network namespace (ip netns) whose loopback holds addr, removed when
// the test ends, and returns its file.
func namespace(t *testing.T, addr string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("makes a network namespace and pings in it: run as root (CI does)")
	}
	name := fmt.Sprintf("vwctl-check-%d", os.Getpid())
	run := func(args ...string) {
		out, err := exec.Command("ip", args...).CombinedOutput()
		require.NoError(t, err, "ip %v: %s", args, out)
	}
	run("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "addr", "add", addr, "dev", "lo")
	return filepath.Join("/run/netns", name)
}

func TestRun(t *testing.T) {
	file := namespace(t, "10.99.0.1/32")
	u, err := fdpass.PathURL(file)
	require.NoError(t, err)
	files := check.Namespaces("/proc", "/run/netns")
	require.Equal(t, file, files[u], "the namespace is found by its inode URL")

	local := inspect.Connection{ID: "a", Client: "nsc", Service: "svc", Mechanism: kernel.MECHANISM, Interface: "nsm-1",
		NetNS: u, EndpointAddrs: []string{"10.99.0.1/32", "10.99.0.2/32"}, PathIndex: 1}
	gone := local
	gone.ID, gone.NetNS, gone.EndpointAddrs = "b", "inode://4/1", []string{"10.99.0.1/32"}
	remote := local
	remote.ID, remote.PathIndex = "c", 3 // its client is on another node: not pinged here
	results := check.Run([]inspect.Connection{local, gone, remote}, files, ping.Ping)

	require.Len(t, results, 3)
	require.Equal(t, "10.99.0.1/32", results[0].Address)
	require.Empty(t, results[0].Error, "the address answers in the client's namespace")
	require.Equal(t, "10.99.0.2/32", results[1].Address)
	require.Contains(t, results[1].Error, "10.99.0.2", "no such address")
	require.Equal(t, "b", results[2].ID)
	require.Contains(t, results[2].Error, "not on this node")
}

func TestBadAddress(t *testing.T) {
	c := inspect.Connection{ID: "a", Mechanism: kernel.MECHANISM, NetNS: "inode://4/1", PathIndex: 1, EndpointAddrs: []string{"not-an-ip"}}
	none := c
	none.ID, none.EndpointAddrs = "b", nil
	results := check.Run([]inspect.Connection{c, none}, nil, func(netns.NsHandle, netip.Addr) error { panic("no ping expected") })
	require.Len(t, results, 2)
	require.Contains(t, results[0].Error, `"not-an-ip" is not an IP address`)
	require.Contains(t, results[1].Error, "no endpoint address")
}

// FuzzEndpointAddress: whatever the IP context says, Run gives a clear error or pings a valid
// address, and never panics.
func FuzzEndpointAddress(f *testing.F) {
	for _, s := range []string{"172.16.1.1/32", "fd00:16:1::1/128", "10.0.0.1", "", "1.2.3.4/99", "::ffff:1.2.3.4/128"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := inspect.Connection{ID: "a", Mechanism: kernel.MECHANISM, NetNS: "file:///nonexistent", PathIndex: 1, EndpointAddrs: []string{s}}
		results := check.Run([]inspect.Connection{c}, nil, func(netns.NsHandle, netip.Addr) error { return nil })
		require.Len(t, results, 1)
		require.NotEmpty(t, results[0].Error, "no such namespace, or no such address")
	})
}
