package integrationtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
)

// adoptTopologies are the topologies whose vWires a restarted forwarder adopts whole (no
// wireguard-go device, which dies with its process), and the WireGuard one, logged beside them.
var adoptTopologies = []string{"k2k", "k2k-eth", "k2vx2k", "k2vx2k-ip", "k2wg2k"}

// TestForwarderRestartsAdoptVWires restarts forwarder1, forwarder2 and forwarder3 in turn
// (VWIRE_ADOPT_ROUNDS rounds, default 2), each killed as a crash and started again, while a
// prober pings across every topology every 5 ms. After each restart it waits until the new
// forwarder has adopted every vWire and VXLAN device its namespace holds (one log line each), so
// the next restart finds a forwarder that serves them all. It checks that no vWire is lost (every
// topology answers at the end) and that no kernel object other than wireguard-go's devices was
// made anew (every forwarder interface keeps its index), and logs per topology the longest
// silence, the longest one with pings lost (a silence without loss is the prober held up, not
// the vWire) and the pings lost, against the longest silence before the first restart.
func TestForwarderRestartsAdoptVWires(t *testing.T) {
	rounds := envInt(t, "VWIRE_ADOPT_ROUNDS", 2, 1)
	dir := upMesh(t)
	nodes := []string{"vw-node1", "vw-node2", "vw-node3"}
	before := map[string]map[string]string{}
	for _, n := range nodes {
		before[n] = forwarderLinks(t, n)
	}
	require.NotEmpty(t, before["vw-node1"])
	probes := startProbes(t)
	start := time.Now()
	for range rounds {
		for i := range nodes {
			restartAdopting(t, dir, i+1)
		}
	}
	end := time.Now()
	for _, p := range probes {
		p.await(t, end, 25)
	}
	for _, n := range nodes {
		require.Equal(t, before[n], forwarderLinks(t, n), "the forwarder's interfaces in %s are the ones made before the restarts (name: index), but for WireGuard's", n)
	}
	for _, p := range probes {
		quiet := p.window(time.Time{}, start)
		restarts := p.window(start, end)
		t.Logf("%s: %d forwarder restarts: longest silence %v (with pings lost: %v), %d of %d pings lost; before them %v, %d of %d lost",
			p.name, 3*rounds, restarts.gap, restarts.lossGap, restarts.lost, restarts.sent, quiet.gap, quiet.lost, quiet.sent)
	}
	_, err := mesh(t, dir, "check")
	require.NoError(t, err, "every topology answers")
}

// BenchmarkForwarderRestart restarts forwarder1 (a crash, then a start) b.N times while every
// topology is probed every 5 ms, each time waiting until the new process adopted what its
// namespace holds, and reports per topology the longest silence and the pings lost (the loss
// window of a forwarder restart), with the longest silence before the first restart.
func BenchmarkForwarderRestart(b *testing.B) {
	dir := upMesh(b)
	probes := startProbes(b)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		restartAdopting(b, dir, 1)
	}
	end := time.Now()
	b.StopTimer()
	for _, p := range probes {
		p.await(b, end, 25)
		quiet, restarts := p.window(time.Time{}, start), p.window(start, end)
		b.ReportMetric(float64(restarts.gap.Microseconds())/1000, p.name+"-gap-ms")
		b.ReportMetric(float64(restarts.lossGap.Microseconds())/1000, p.name+"-loss-gap-ms")
		b.ReportMetric(float64(restarts.lost)/float64(b.N), p.name+"-lost/restart")
		b.ReportMetric(float64(quiet.gap.Microseconds())/1000, p.name+"-quiet-gap-ms")
	}
}

// restartAdopting restarts the forwarder of node n and waits until it adopted every interface
// of its namespace but WireGuard's (which it makes anew), each of which it logs.
func restartAdopting(t testing.TB, dir string, n int) {
	t.Helper()
	name := fmt.Sprintf("forwarder%d", n)
	want := 0
	for _, kind := range forwarderLinks(t, fmt.Sprintf("vw-node%d", n)) {
		if !strings.HasSuffix(kind, "tun") {
			want++
		}
	}
	logPath := filepath.Join(dir, "run", name+".log")
	old, err := os.Stat(logPath)
	require.NoError(t, err)
	_, err = mesh(t, dir, "restart", name)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(logPath)
		return err == nil && strings.Count(string(b[old.Size():]), `msg="adopted the `) >= want
	}, 20*time.Second, 10*time.Millisecond, "%s adopted the %d interfaces of its namespace", name, want)
}

// forwarderLinks returns the forwarder's interfaces of a node's namespace (ifname's rule) as
// "index kind" by name, WireGuard's (tun) without the index, which changes.
func forwarderLinks(t testing.TB, netns string) map[string]string {
	t.Helper()
	out, err := exec.Command("ip", "-n", netns, "-d", "-o", "link").Output()
	require.NoError(t, err)
	found := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if !ifname.Ours(name) {
			continue
		}
		index := strings.TrimSuffix(f[0], ":")
		switch {
		case strings.Contains(line, " tun type "):
			found[name] = "tun"
		case strings.Contains(line, " vxlan id "):
			found[name] = index + " vxlan"
		default:
			found[name] = index + " veth"
		}
	}
	return found
}

// probe is ping -D every 5 ms from a topology's client to its endpoint.
type probe struct {
	name string
	out  *lockedBuffer
}

func startProbes(t testing.TB) []*probe {
	var probes []*probe
	for _, tp := range topologies {
		if !slices.Contains(adoptTopologies, tp.name) {
			continue
		}
		p := &probe{name: tp.name, out: &lockedBuffer{}}
		cmd := exec.Command("ip", "netns", "exec", "vw-nsc-"+tp.name, "ping", "-D", "-n", "-i", "0.005", "-W", "1", tp.endpoint)
		cmd.Stdout = p.out
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		probes = append(probes, p)
	}
	for _, p := range probes {
		p.await(t, time.Now(), 200) // a second of replies: the silence before the restarts
	}
	return probes
}

// await waits until the probe has had n replies after t0.
func (p *probe) await(t testing.TB, t0 time.Time, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(p.replies(t0, time.Now().Add(time.Hour))) >= n }, 30*time.Second, 10*time.Millisecond,
		"%s answers", p.name)
}

// reply is one echo reply: when it came, and its sequence number.
type reply struct {
	at  float64
	seq int
}

// replies are the probe's replies that came between from and to.
func (p *probe) replies(from, to time.Time) []reply {
	lo, hi := float64(from.UnixMicro())/1e6, float64(to.UnixMicro())/1e6
	return slices.DeleteFunc(pingReplies(p.out.String()), func(r reply) bool { return r.at < lo || r.at > hi })
}

// pingReplies reads the replies in ping -D's output.
func pingReplies(out string) []reply {
	var got []reply
	for _, line := range strings.Split(out, "\n") {
		var r reply
		_, seq, ok := strings.Cut(line, "icmp_seq=")
		if !ok || !strings.Contains(line, "bytes from") {
			continue
		}
		if _, err := fmt.Sscanf(line, "[%f]", &r.at); err != nil {
			continue
		}
		if _, err := fmt.Sscanf(seq, "%d", &r.seq); err != nil {
			continue
		}
		got = append(got, r)
	}
	return got
}

// window is what a probe saw between two times.
type window struct {
	gap        time.Duration // the longest silence between two replies
	lossGap    time.Duration // the longest silence between two replies with unanswered requests between them
	sent, lost int           // echo requests between the first and the last reply, and those unanswered
}

func (p *probe) window(from, to time.Time) window {
	return windowOf(p.replies(from, to))
}

// windowOf is what replies, in the order they came, say of their window.
func windowOf(got []reply) window {
	var w window
	if len(got) < 2 {
		return w
	}
	answered := map[int]bool{}
	for i, r := range got {
		answered[r.seq] = true
		if i > 0 {
			// A silence between consecutive sequence numbers lost nothing: the prober itself was
			// held up (two cores shared by the whole mesh, processes starting).
			gap := time.Duration((r.at-got[i-1].at)*1e6) * time.Microsecond
			w.gap = max(w.gap, gap)
			if r.seq-got[i-1].seq > 1 {
				w.lossGap = max(w.lossGap, gap)
			}
		}
	}
	w.sent = got[len(got)-1].seq - got[0].seq + 1
	w.lost = w.sent - len(answered)
	return w
}
