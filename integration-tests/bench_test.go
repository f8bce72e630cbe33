package integrationtests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// run runs a command, failing the benchmark with its output when it fails.
func run(b *testing.B, name string, args ...string) string {
	b.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(b, err, "%s %v: %s", name, args, out)
	return string(out)
}

// BenchmarkFirstPing measures, per topology, the time from starting a client (cmd-nsc, in a
// namespace of its own on node 1) to the first ping answered across its new vWire.
func BenchmarkFirstPing(b *testing.B) {
	dir := upMesh(b)
	for _, tc := range topologies {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := "vw-bench-nsc"
				run(b, "ip", "netns", "add", ns)
				b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
				run(b, "ip", "-n", ns, "link", "set", "lo", "up")
				nsc := exec.Command("ip", "netns", "exec", ns, filepath.Join(dir, "bin", "cmd-nsc"))
				nsc.Env = []string{
					"PATH=" + os.Getenv("PATH"),
					"NSM_NAME=bench-nsc",
					"NSM_NETWORK_SERVICES=kernel://" + tc.service + "/nsm-1",
					"NSM_CONNECT_TO=unix://" + filepath.Join(dir, "run", "nsmgr1.sock"),
				}
				log := &lockedBuffer{}
				nsc.Stdout, nsc.Stderr = log, log
				b.StartTimer()

				require.NoError(b, nsc.Start())
				b.Cleanup(func() { _ = nsc.Process.Kill(); _ = nsc.Wait() })
				deadline := time.Now().Add(30 * time.Second)
				for !pingOnce(ns) {
					require.True(b, time.Now().Before(deadline), "no ping answered within 30s; the client said:\n%s", log.String())
					time.Sleep(2 * time.Millisecond)
				}

				b.StopTimer()
				require.NoError(b, nsc.Process.Signal(syscall.SIGTERM))
				require.NoError(b, nsc.Wait(), "the client stops cleanly; it said:\n%s", log.String())
				run(b, "ip", "netns", "del", ns)
				b.StartTimer()
			}
		})
	}
}

// pingOnce pings, from namespace ns, the endpoint's end of the vWire nsm-1 once: the
// destination of its route. False while there is no vWire yet or no answer.
func pingOnce(ns string) bool {
	out, err := exec.Command("ip", "-n", ns, "-4", "route", "show", "dev", "nsm-1").Output()
	if err != nil {
		return false
	}
	dst, _, _ := strings.Cut(string(out), " ")
	return dst != "" && exec.Command("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.2", "-q", dst).Run() == nil
}

// BenchmarkThroughput measures, per topology, TCP throughput with iperf3 from the client to its
// endpoint across the vWire, against a baseline between the same namespaces measured in the same
// iteration: a plain veth pair, or for WireGuard a WireGuard tunnel made by hand between the two
// nodes on the same underlay (two wireguard-go processes, as the forwarders run it here). It reports both in
// Mbit/s and their ratio; the goals are at least 0.9 for Kernel2Kernel and WireGuard, 0.8 for
// VXLAN. A VXLAN vWire is also compared with a VXLAN tunnel made by hand (vs-hand-vxlan).
func BenchmarkThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is missing (Debian: apt-get install iperf3)")
	}
	upMesh(b)
	for _, tc := range topologies {
		b.Run(tc.name, func(b *testing.B) {
			client, server := "vw-nsc-"+tc.name, "vw-nse-"+tc.name
			if tc.name == "k2k" && len(links(b, "vw-nse-k2k-2")) > 0 {
				server = "vw-nse-k2k-2" // the other endpoint of the service holds the vWire
			}
			var baseline func() float64
			if tc.name == "k2wg2k" {
				baseline = wireguardBaseline(b, "vw-node1", "vw-node2")
			} else {
				baseline = vethBaseline(b, client, server)
			}
			// A VXLAN vWire is also measured against a VXLAN device pair made by hand between the
			// same nodes: what the kernel's VXLAN costs on this machine, whatever the mesh does.
			var handVXLAN func() float64
			if strings.HasPrefix(tc.name, "k2vx2k") {
				handVXLAN = vxlanBaseline(b, 1, tc.node)
			}
			iperfServer(b, server)
			var vwire, base, hand float64
			for i := 0; i < b.N; i++ {
				vwire += iperf(b, client, tc.endpoint)
				base += baseline()
				if handVXLAN != nil {
					hand += handVXLAN()
				}
			}
			b.ReportMetric(vwire/float64(b.N), "Mbit/s")
			b.ReportMetric(base/float64(b.N), "baseline-Mbit/s")
			b.ReportMetric(vwire/base, "ratio")
			if handVXLAN != nil {
				b.ReportMetric(vwire/hand, "vs-hand-vxlan")
			}
		})
	}
}

// vethBaseline joins the client's and the endpoint's namespaces with a plain veth pair and
// returns a measurement across it.
func vethBaseline(b *testing.B, client, server string) func() float64 {
	run(b, "ip", "link", "add", "vw-base0", "netns", client, "type", "veth", "peer", "name", "vw-base1", "netns", server)
	b.Cleanup(func() { _ = exec.Command("ip", "-n", client, "link", "del", "vw-base0").Run() })
	run(b, "ip", "-n", client, "addr", "add", "10.250.0.1/30", "dev", "vw-base0")
	run(b, "ip", "-n", server, "addr", "add", "10.250.0.2/30", "dev", "vw-base1")
	run(b, "ip", "-n", client, "link", "set", "vw-base0", "up")
	run(b, "ip", "-n", server, "link", "set", "vw-base1", "up")
	return func() float64 { return iperf(b, client, "10.250.0.2") }
}

// vxlanBaseline makes a VXLAN device pair by hand between node from and node to, over their
// underlay addresses (10.200.0.N), and returns a measurement across it.
func vxlanBaseline(b *testing.B, from, to int) func() float64 {
	for _, end := range [][2]int{{from, to}, {to, from}} {
		node := fmt.Sprintf("vw-node%d", end[0])
		run(b, "ip", "-n", node, "link", "add", "vw-handvx", "type", "vxlan", "id", "999",
			"local", fmt.Sprintf("10.200.0.%d", end[0]), "remote", fmt.Sprintf("10.200.0.%d", end[1]), "dstport", "4789")
		b.Cleanup(func() { _ = exec.Command("ip", "-n", node, "link", "del", "vw-handvx").Run() })
		run(b, "ip", "-n", node, "addr", "add", fmt.Sprintf("10.252.0.%d/24", end[0]), "dev", "vw-handvx")
		run(b, "ip", "-n", node, "link", "set", "vw-handvx", "up")
	}
	iperfServer(b, fmt.Sprintf("vw-node%d", to))
	return func() float64 { return iperf(b, fmt.Sprintf("vw-node%d", from), fmt.Sprintf("10.252.0.%d", to)) }
}

// wireguardBaseline makes a WireGuard tunnel by hand between two nodes, over the same underlay
// addresses (10.200.0.N): a wireguard-go process per node, of the version the forwarders run,
// configured through its UAPI socket; it returns a measurement across the tunnel.
func wireguardBaseline(b *testing.B, nodes ...string) func() float64 {
	wireguardGo := filepath.Join(b.TempDir(), "wireguard-go")
	build := exec.Command("go", "build", "-o", wireguardGo, "golang.zx2c4.com/wireguard")
	build.Dir = "../sdk-kernel" // the version sdk-kernel requires
	out, err := build.CombinedOutput()
	require.NoError(b, err, "build wireguard-go: %s", out)
	wg, err := wgctrl.New()
	require.NoError(b, err)
	b.Cleanup(func() { _ = wg.Close() })

	var keys [2]wgtypes.Key
	for i := range keys {
		keys[i], err = wgtypes.GeneratePrivateKey()
		require.NoError(b, err)
	}
	ports := [2]int{51900, 51901}
	for i, node := range nodes {
		name := fmt.Sprintf("vw-basewg%d", i)
		daemon := exec.Command("ip", "netns", "exec", node, wireguardGo, "--foreground", name)
		require.NoError(b, daemon.Start())
		b.Cleanup(func() {
			_ = daemon.Process.Kill()
			_ = daemon.Wait()
			_ = os.Remove(filepath.Join("/var/run/wireguard", name+".sock"))
		})
		require.Eventually(b, func() bool { _, err := wg.Device(name); return err == nil }, 5*time.Second, 10*time.Millisecond, "wireguard-go serves %s", name)
		other := 1 - i
		require.NoError(b, wg.ConfigureDevice(name, wgtypes.Config{
			PrivateKey: &keys[i],
			ListenPort: &ports[i],
			Peers: []wgtypes.PeerConfig{{
				PublicKey:  keys[other].PublicKey(),
				Endpoint:   &net.UDPAddr{IP: net.IPv4(10, 200, 0, byte(other+1)), Port: ports[other]},
				AllowedIPs: []net.IPNet{{IP: net.IPv4(10, 251, 0, byte(other+1)), Mask: net.CIDRMask(32, 32)}},
			}},
		}))
		run(b, "ip", "-n", node, "addr", "add", fmt.Sprintf("10.251.0.%d/30", i+1), "dev", name)
		run(b, "ip", "-n", node, "link", "set", name, "up")
	}
	iperfServer(b, nodes[1])
	return func() float64 { return iperf(b, nodes[0], "10.251.0.2") }
}

// iperfServer runs an iperf3 server in a namespace until the benchmark ends.
func iperfServer(b *testing.B, ns string) {
	server := exec.Command("ip", "netns", "exec", ns, "iperf3", "--server")
	require.NoError(b, server.Start())
	b.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })
}

// iperf measures TCP throughput from namespace ns to addr in Mbit/s: 3 seconds after 1 second
// of warm-up, retrying while the server is not listening yet.
func iperf(b *testing.B, ns, addr string) float64 {
	b.Helper()
	var result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var out []byte
	for range 50 {
		// iperf3 --json reports its errors in the JSON, whatever its exit code.
		out, _ = exec.Command("ip", "netns", "exec", ns, "iperf3", "--client", addr, "--time", "3", "--omit", "1", "--json").Output()
		result.Error = ""
		require.NoError(b, json.Unmarshal(out, &result), "iperf3 to %s from %s: %s", addr, ns, out)
		if result.Error == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Empty(b, result.Error, "iperf3 to %s from %s", addr, ns)
	require.Positive(b, result.End.SumReceived.BitsPerSecond, "iperf3 measured nothing: %s", out)
	return result.End.SumReceived.BitsPerSecond / 1e6
}
