package integrationtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mesh runs deployments-k8s/local/mesh.sh with args, its files in dir.
func mesh(t testing.TB, dir string, args ...string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("../deployments-k8s/local/mesh.sh")
	require.NoError(t, err)
	cmd := exec.Command(script, args...)
	cmd.Env = append(os.Environ(), "VWIRE_DEMO_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("mesh.sh %s:\n%s", strings.Join(args, " "), out)
	return string(out), err
}

func namespaces(t testing.TB) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	var vw []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "vw-") {
			vw = append(vw, f[0])
		}
	}
	return vw
}

// topology is a client of the local mesh and what it reaches.
type topology struct {
	name     string // mesh.sh's, which names the client's and the endpoint's namespaces
	service  string
	endpoint string // the endpoint's address across the vWire
	node     int    // the endpoint's node (every client runs on node 1)
}

var topologies = []topology{
	{"k2k", "icmp-k2k", "172.16.1.1", 1},
	{"k2k-eth", "icmp-k2k-eth", "172.16.2.1", 1},
	{"k2wg2k", "icmp-k2wg2k", "172.16.3.1", 2},
	{"k2vx2k", "icmp-k2vx2k", "172.16.4.1", 2},
	{"k2vx2k-ip", "icmp-k2vx2k-ip", "172.16.5.1", 3},
}

// upMesh starts the local mesh and returns its folder; the mesh goes down when the test or
// benchmark ends.
func upMesh(t testing.TB) string {
	t.Helper()
	dir := newMesh(t)
	_, err := mesh(t, dir, "up")
	require.NoError(t, err)
	return dir
}

// newMesh returns the folder of a local mesh that is not up yet (its binaries will be in bin)
// and takes the mesh down when the test or benchmark ends.
func newMesh(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the local mesh makes network namespaces: run as root (CI does)")
	}
	require.Empty(t, namespaces(t), "vw-* namespaces exist already: a mesh is up on this machine")
	dir := filepath.Join(t.TempDir(), "mesh")
	t.Cleanup(func() {
		if t.Failed() { // keep the components' logs, which down removes
			kept := filepath.Join(os.TempDir(), fmt.Sprintf("vwire-mesh-logs-%d", time.Now().UnixNano()))
			if err := exec.Command("cp", "-r", filepath.Join(dir, "run"), kept).Run(); err == nil {
				t.Logf("the components' logs are in %s", kept)
			}
		}
		_, _ = mesh(t, dir, "down")
	})
	return dir
}

// TestLocalMesh is the README's main command: every topology carries ping, and down leaves no
// namespace, process or file.
func TestLocalMesh(t *testing.T) {
	dir := upMesh(t)
	out, err := mesh(t, dir, "check")
	require.NoError(t, err)
	for _, tc := range topologies {
		require.Contains(t, out, tc.name+": ping 172.16.", "%s carries IPv4", tc.name)
		require.Contains(t, out, tc.name+": ping fd00:16:", "%s carries IPv6", tc.name)
	}
	// Node 2 carries WireGuard (a wireguard-go TUN) and VXLAN; node 3 offers VXLAN only, so its
	// IP service runs over VXLAN.
	require.Equal(t, map[string]int{"tun": 1, "vxlan": 1}, tunnels(t, "vw-node2"), "node 2's tunnels")
	require.Equal(t, map[string]int{"vxlan": 1}, tunnels(t, "vw-node3"), "node 3's tunnels")

	silence := outage(t, func() { _, err := mesh(t, dir, "restart", "forwarder1"); require.NoError(t, err) })
	t.Logf("forwarder 1 killed and started again: the longest silence was %v", silence)
	require.Eventually(t, func() bool { _, err := mesh(t, dir, "check"); return err == nil }, 20*time.Second, 500*time.Millisecond,
		"every client healed after forwarder 1 restarted, those through other nodes too")
	// The other components, one at a time: the endpoints' forwarders (whose vWires are made again
	// while the clients' stay), the registry and an nsmgr. Every client heals within seconds.
	for _, name := range []string{"forwarder2", "forwarder3", "registry", "nsmgr1", "nsmgr2"} {
		_, err := mesh(t, dir, "restart", name)
		require.NoError(t, err)
		require.Eventually(t, func() bool { _, err := mesh(t, dir, "check"); return err == nil }, 10*time.Second, 500*time.Millisecond,
			"every client healed after %s restarted", name)
	}

	serving, spare := "k2k", "k2k-2"
	if len(links(t, "vw-nse-k2k-2")) > 0 {
		serving, spare = spare, serving
	}
	addr := links(t, "vw-nsc-k2k")["nsm-1"]
	silence = outage(t, func() { _, err := mesh(t, dir, "kill", "nse-"+serving); require.NoError(t, err) })
	t.Logf("endpoint nse-%s killed, nse-%s took over: the longest silence was %v", serving, spare, silence)
	require.Len(t, links(t, "vw-nse-"+spare), 1, "the spare endpoint holds the client's vWire")
	require.Equal(t, addr, links(t, "vw-nsc-k2k")["nsm-1"], "the client kept its addresses: both endpoints draw from one prefix")

	// A client that dies and starts again in its namespace finds its old vWire there, closes its
	// connection along the path (which removes the vWire) and gets a new one.
	_, err = mesh(t, dir, "restart", "nsc-k2wg2k")
	require.NoError(t, err)
	clientLog := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "run", "nsc-k2wg2k.log"))
		require.NoError(t, err)
		return string(b)
	}
	require.Eventually(t, func() bool { return strings.Count(clientLog(), "msg=connected") == 2 }, 20*time.Second, 20*time.Millisecond,
		"the restarted client connected")
	require.Contains(t, clientLog(), "closed the connection a previous run left")
	require.True(t, pingOnce("vw-nsc-k2wg2k"), "the new vWire carries ping")

	pids, err := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	require.NoError(t, err)
	require.NotEmpty(t, pids)
	var procs []string
	for _, p := range pids {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		procs = append(procs, strings.TrimSpace(string(b)))
	}

	_, err = mesh(t, dir, "down")
	require.NoError(t, err)
	require.Empty(t, namespaces(t), "down removed every namespace")
	require.NoDirExists(t, dir, "down removed its files")
	for _, pid := range procs {
		require.False(t, running(pid), "process %s is gone", pid)
	}
}

// outage runs disrupt while the k2k client pings its endpoint (pingDuring) and returns the
// longest silence between two replies.
func outage(t *testing.T, disrupt func()) time.Duration {
	t.Helper()
	at := replyTimes(pingDuring(t, disrupt))
	gap := 0.0
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i]-at[i-1])
	}
	return time.Duration(gap * float64(time.Second)).Round(time.Millisecond)
}

// pingDuring runs disrupt while the k2k client pings its endpoint every 20 ms, waits for the
// replies to come back by themselves, and returns ping's output (ping -D: each line stamped).
func pingDuring(t *testing.T, disrupt func()) string {
	t.Helper()
	ping := exec.Command("ip", "netns", "exec", "vw-nsc-k2k", "ping", "-D", "-n", "-i", "0.02", "-W", "1", "172.16.1.1")
	out := &lockedBuffer{}
	ping.Stdout = out
	require.NoError(t, ping.Start())
	t.Cleanup(func() { _ = ping.Process.Kill(); _ = ping.Wait() })

	require.Eventually(t, func() bool { return len(replyTimes(out.String())) >= 10 }, 10*time.Second, 10*time.Millisecond, "pings before the disruption")
	disrupt()
	disrupted := float64(time.Now().UnixMicro()) / 1e6
	require.Eventually(t, func() bool {
		n := 0
		for _, ts := range replyTimes(out.String()) {
			if ts > disrupted {
				n++
			}
		}
		return n >= 25
	}, 30*time.Second, 10*time.Millisecond, "traffic came back by itself")
	_ = ping.Process.Kill()
	_ = ping.Wait()
	return out.String()
}

// replyTimes returns when each reply in ping -D's output came, in seconds since the epoch.
func replyTimes(out string) []float64 {
	var at []float64
	for _, line := range strings.Split(out, "\n") {
		var ts float64
		if strings.Contains(line, "bytes from") {
			if _, err := fmt.Sscanf(line, "[%f]", &ts); err == nil {
				at = append(at, ts)
			}
		}
	}
	return at
}

// links returns the interfaces of a network namespace other than lo, with their IPv4 addresses.
func links(t testing.TB, netns string) map[string]string {
	t.Helper()
	out, err := exec.Command("ip", "-n", netns, "-brief", "-4", "addr").Output()
	require.NoError(t, err)
	all, err := exec.Command("ip", "-n", netns, "-brief", "link").Output()
	require.NoError(t, err)
	found := map[string]string{}
	for _, line := range strings.Split(string(all), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] != "lo" {
			found[strings.Split(f[0], "@")[0]] = ""
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 2 {
			found[strings.Split(f[0], "@")[0]] = strings.Join(f[2:], " ")
		}
	}
	delete(found, "lo")
	return found
}

// tunnels counts a node's tunnel interfaces by kind (vxlan, and tun for wireguard-go).
func tunnels(t *testing.T, netns string) map[string]int {
	t.Helper()
	out, err := exec.Command("ip", "-n", netns, "-d", "-o", "link").Output()
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.Contains(line, " vxlan id "):
			kinds["vxlan"]++
		case strings.Contains(line, " tun type "):
			kinds["tun"]++
		}
	}
	return kinds
}

// lockedBuffer is ping's output, written by exec's copying goroutine while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running tells whether the process runs: a zombie its parent has not reaped yet holds nothing.
func running(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
