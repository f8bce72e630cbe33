package integrationtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLiveServiceChanges: a running client (cmd-nsc on node 1, in a namespace of its own) with
// two services, k2k's and k2wg2k's, takes a third (k2vx2k's) and then lets the second go, each
// time by a new list in its NSM_NETWORK_SERVICES_FILE and a SIGHUP. The third vWire appears and
// carries ping; the second's interface goes, and so does its end at the endpoint (the connection
// was closed along the path); and the first vWire, probed every 5 ms throughout, loses no ping
// and keeps its interface (the same index: it was not made again).
func TestLiveServiceChanges(t *testing.T) {
	dir := upMesh(t)
	const ns = "vw-nsc-live"
	cmd := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		require.NoError(t, err, "%s %v: %s", name, args, out)
		return string(out)
	}
	cmd("ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	cmd("ip", "-n", ns, "link", "set", "lo", "up")

	list := filepath.Join(t.TempDir(), "services")
	write := func(services ...string) {
		t.Helper()
		require.NoError(t, os.WriteFile(list+".new", []byte(strings.Join(services, ",")), 0o644))
		require.NoError(t, os.Rename(list+".new", list))
	}
	first, second, third := "kernel://icmp-k2k/live-1", "kernel://icmp-k2wg2k/live-2", "kernel://icmp-k2vx2k/live-3"
	write(first, second)
	nsc := exec.Command("ip", "netns", "exec", ns, filepath.Join(dir, "bin", "cmd-nsc"))
	nsc.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"NSM_NAME=nsc-live",
		// An identity the mesh issued (a client's): the mesh's trust domain makes no other.
		"NSM_IDENTITY_DIR=" + filepath.Join(dir, "id", "nsc-k2k"),
		"NSM_CONNECT_TO=unix://" + filepath.Join(dir, "run", "nsmgr1.sock"),
		"NSM_NETWORK_SERVICES_FILE=" + list,
	}
	log := &lockedBuffer{}
	nsc.Stdout, nsc.Stderr = log, log
	require.NoError(t, nsc.Start())
	t.Cleanup(func() { _ = nsc.Process.Kill(); _ = nsc.Wait() })
	logged := func(s string, n int) func() bool {
		return func() bool { return strings.Count(log.String(), s) >= n }
	}
	require.Eventually(t, logged("msg=connected", 2), 30*time.Second, 10*time.Millisecond, "the client connected both services:\n%s", log.String())

	endpointLinks := len(links(t, "vw-nse-k2wg2k"))
	require.Equal(t, 2, endpointLinks, "k2wg2k's endpoint holds the mesh's client's vWire and this one's")
	index := linkIndex(t, ns, "live-1")
	p := &probe{name: "live-1", out: &lockedBuffer{}}
	ping := exec.Command("ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.005", "-W", "1", vwirePeer(t, ns, "live-1"))
	ping.Stdout = p.out
	require.NoError(t, ping.Start())
	t.Cleanup(func() { _ = ping.Process.Kill(); _ = ping.Wait() })
	p.await(t, time.Now(), 200) // a second of replies before the changes
	start := time.Now()

	write(first, second, third)
	require.NoError(t, nsc.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, logged("msg=connected", 3), 30*time.Second, 10*time.Millisecond, "the client connected the third service:\n%s", log.String())
	peer := vwirePeer(t, ns, "live-3")
	cmd("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", peer)

	write(first, third)
	require.NoError(t, nsc.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, logged(`msg=closed cmd=cmd-nsc service=kernel://icmp-k2wg2k/live-2`, 1), 30*time.Second, 10*time.Millisecond,
		"the client closed the second service:\n%s", log.String())
	require.NotContains(t, links(t, ns), "live-2", "the second vWire is gone from the client")
	require.Eventually(t, func() bool { return len(links(t, "vw-nse-k2wg2k")) == endpointLinks-1 }, 10*time.Second, 10*time.Millisecond,
		"the endpoint's end of the second vWire is gone: %v", links(t, "vw-nse-k2wg2k"))
	end := time.Now()

	p.await(t, end, 25)
	w := p.window(start, end)
	t.Logf("live-1 across the changes: longest silence %v, %d of %d pings lost", w.gap, w.lost, w.sent)
	require.Zero(t, w.lost, "the first vWire lost no ping while services were added and removed")
	require.Equal(t, index, linkIndex(t, ns, "live-1"), "the first vWire is the one made at start")
	require.Equal(t, 3, strings.Count(log.String(), "msg=connected"), "no service was asked for twice:\n%s", log.String())
	cmd("ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", peer)

	require.NoError(t, nsc.Process.Signal(syscall.SIGTERM))
	require.NoError(t, nsc.Wait(), "the client stops cleanly; it said:\n%s", log.String())
	require.Empty(t, links(t, ns), "the client closed every vWire at exit")
}

// vwirePeer returns the endpoint's IPv4 address across the vWire dev in namespace ns: the
// destination of its route.
func vwirePeer(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-4", "route", "show", "dev", dev).Output()
	require.NoError(t, err)
	dst, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	require.NotEmpty(t, dst, "a route across %s in %s", dev, ns)
	return dst
}

// linkIndex returns the index of interface name in namespace ns.
func linkIndex(t *testing.T, ns, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", name).Output()
	require.NoError(t, err)
	index, _, _ := strings.Cut(string(out), ":")
	return index
}
