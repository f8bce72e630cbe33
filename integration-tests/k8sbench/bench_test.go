//go:build k8sexamples

// Package k8sbench measures, on a real cluster, what a user of the examples waits for: the time
// from `kubectl apply` of a client pod to the first ping answered across its vWire, per topology
// (Kernel2Kernel on one node; Kernel2Wireguard2Kernel and Kernel2Vxlan2Kernel across two), with
// the mesh installed and the endpoint ready. Each iteration applies the example's client.yaml and
// times, on this machine's clock, the steps in between: the pod created (the API server and the
// admission webhook, whose own share comes from the API server's metrics), scheduled, its cmd-nsc
// started and connected (its Request through both nsmgrs, the forwarders and the endpoint: the
// timestamps containerd gives its log lines), its cmd-nsc-wait done, the pod Ready, and the first
// echo answered (sent every 10 ms from the pod's network namespace).
//
// It exists because the project's goal (a client connected within a second) is met or missed by
// the sum of Kubernetes' and the mesh's parts, which only the real cluster shows.
//
// Like the suites of integration-tests/k8s it has the build tag k8sexamples and uses the cluster
// VWIRE_KUBECONFIG names, or starts one of two nodes from the programs of `make cluster-bins` and
// the images of `make images VERSION=dev` (mdtest's Suite.Main); it installs the mesh with
// the steps of examples/basic and of what basic requires (SPIRE), and removes it after.
package k8sbench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"vwire.dev/integration-tests/mdtest"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// workspace is the repository's root, relative to this package.
const workspace = "../.."

// suite is the cluster the benchmark runs on, found or started by mdtest (as a suite of
// integration-tests/k8s: VWIRE_KUBECONFIG, or a cluster of two nodes it starts and stops), with
// examples/basic's steps, after those of what it requires, as its setup: the mesh is installed
// first and removed after.
var suite = mdtest.Suite{Workspace: workspace}

func TestMain(m *testing.M) {
	var err error
	if suite.Setup, err = withRequired("basic"); err != nil {
		fmt.Fprintf(os.Stderr, "k8sbench: the mesh's example: %v\n", err)
		os.Exit(1)
	}
	os.Exit(suite.Main(m))
}

// withRequired returns the example name (a folder of deployments-k8s/examples) after the
// examples its README requires, each after its own: basic after SPIRE's.
func withRequired(name string) ([]mdtest.Example, error) {
	readme, err := os.ReadFile(filepath.Join(workspace, "deployments-k8s", "examples", name, "README.md"))
	if err != nil {
		return nil, err
	}
	page, err := mdtest.Parse(name, readme)
	if err != nil {
		return nil, err
	}
	var examples []mdtest.Example
	for _, target := range page.Requires {
		target, _, _ = strings.Cut(target, "#")
		required, err := withRequired(path.Clean(path.Join(name, strings.TrimSuffix(target, "README.md"))))
		if err != nil {
			return nil, err
		}
		examples = append(examples, required...)
	}
	return append(examples, mdtest.Example{Name: name, Run: page.Run, Cleanup: page.Cleanup}), nil
}

// topology is an example whose client the benchmark applies again and again.
type topology struct {
	name    string // the sub-benchmark's name
	example string // its folder under deployments-k8s/examples
	ns      string // its namespace
	// forwarder, when set, is a kustomization applied to the mesh's forwarders first, and undone
	// after by applying examples/basic again.
	forwarder string
	dst       netip.Addr // the endpoint's address on the vWire
}

var topologies = []topology{
	{name: "Kernel2Kernel", example: "use-cases/Kernel2Kernel", ns: "ns-kernel2kernel", dst: netip.MustParseAddr("172.16.1.100")},
	{name: "Kernel2Wireguard2Kernel", example: "use-cases/Kernel2Wireguard2Kernel", ns: "ns-kernel2wireguard2kernel", dst: netip.MustParseAddr("172.16.1.100")},
	{name: "Kernel2Vxlan2Kernel", example: "use-cases/Kernel2Vxlan2Kernel", ns: "ns-kernel2vxlan2kernel",
		forwarder: "use-cases/Kernel2Vxlan2Kernel/forwarder", dst: netip.MustParseAddr("172.16.1.100")},
}

// The client pod of every example, and its injected containers.
const (
	clientPod = "alpine"
	nscName   = "cmd-nsc"
	waitName  = "cmd-nsc-wait"
)

// BenchmarkApplyToPing measures, per topology, the time from `kubectl apply` of the client pod to
// its first answered ping (ns/op, and first-ping-ms), and reports when each step was done, in ms
// from the apply's start: created (webhook-ms: the webhook's share), scheduled, nsc-started,
// nsc-connected, wait-done, ready (which may come after the first ping: nothing in the data path
// waits for it); first-ping-from-scheduled is the part after the scheduler.
func BenchmarkApplyToPing(b *testing.B) {
	cs := client(b)
	for _, tp := range topologies {
		b.Run(tp.name, func(b *testing.B) {
			examples := filepath.Join("deployments-k8s", "examples")
			if tp.forwarder != "" {
				kubectl(b, "apply", "-k", filepath.Join(examples, tp.forwarder))
				kubectl(b, "rollout", "status", "daemonset/forwarder-kernel", "-n", "nsm-system", "--timeout=2m")
				b.Cleanup(func() {
					kubectl(b, "apply", "-k", filepath.Join(examples, "basic"))
					kubectl(b, "rollout", "status", "daemonset/forwarder-kernel", "-n", "nsm-system", "--timeout=2m")
				})
			}
			kubectl(b, "apply", "-k", filepath.Join(examples, tp.example))
			b.Cleanup(func() { kubectl(b, "delete", "ns", tp.ns, "--wait=true", "--timeout=2m") })
			kubectl(b, "rollout", "status", "deployment/nse-kernel", "-n", tp.ns, "--timeout=2m")
			kubectl(b, "wait", "--for=condition=ready", "--timeout=2m", "pod", clientPod, "-n", tp.ns)
			clientFile := filepath.Join(examples, tp.example, "client.yaml")

			var sum steps
			for b.Loop() {
				b.StopTimer()
				kubectl(b, "delete", "pod", clientPod, "-n", tp.ns, "--wait=true", "--timeout=1m")
				webhookBefore := webhookSeconds(b, cs)
				b.StartTimer()
				s, start := applyAndPing(b, cs, tp, clientFile)
				s.webhook = time.Duration((webhookSeconds(b, cs) - webhookBefore) * float64(time.Second))
				logSteps(b, cs, tp.ns, start, &s)
				sum.add(s)
				b.StartTimer()
			}
			n := float64(b.N)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
			b.ReportMetric(ms(sum.webhook), "webhook-ms")
			b.ReportMetric(ms(sum.created), "created-ms")
			b.ReportMetric(ms(sum.scheduled), "scheduled-ms")
			b.ReportMetric(ms(sum.nscStarted), "nsc-started-ms")
			b.ReportMetric(ms(sum.nscConnected), "nsc-connected-ms")
			b.ReportMetric(ms(sum.waitDone), "wait-done-ms")
			b.ReportMetric(ms(sum.ready), "ready-ms")
			b.ReportMetric(ms(sum.ping), "first-ping-ms")
			b.ReportMetric(ms(sum.ping-sum.scheduled), "first-ping-from-scheduled-ms")
		})
	}
}

// steps are the times, from the apply's start, at which each step was seen done.
type steps struct {
	webhook                                                             time.Duration // its own duration, not a time
	created, scheduled, nscStarted, nscConnected, waitDone, ready, ping time.Duration
}

func (s *steps) add(o steps) {
	s.webhook += o.webhook
	s.created += o.created
	s.scheduled += o.scheduled
	s.nscStarted += o.nscStarted
	s.nscConnected += o.nscConnected
	s.waitDone += o.waitDone
	s.ready += o.ready
	s.ping += o.ping
}

// applyAndPing applies the client, stops b's timer once a ping across its vWire is answered, and
// returns once the pod is Ready too, with the steps it saw.
func applyAndPing(b *testing.B, cs kubernetes.Interface, tp topology, clientFile string) (s steps, start time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := cs.CoreV1().Pods(tp.ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + clientPod})
	require.NoError(b, err)
	defer w.Stop()

	start = time.Now()
	applied := make(chan error, 1)
	go func() {
		out, err := kubectlCmd("apply", "-f", clientFile, "-n", tp.ns).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("kubectl apply -f %s: %w: %s", clientFile, err, out)
		}
		applied <- err
	}()
	pinged := make(chan error, 1)
	uid := make(chan string, 1)
	go func() { pinged <- pingFromPod(ctx, uid, tp.dst) }()

	for s.ping == 0 || s.ready == 0 {
		select {
		case err := <-applied:
			require.NoError(b, err)
			applied = nil
		case err := <-pinged:
			require.NoError(b, err, "ping %s from the client of %s", tp.dst, tp.name)
			s.ping = time.Since(start)
			b.StopTimer() // the time per op ends here; Ready may come later
			pinged = nil
		case ev, ok := <-w.ResultChan():
			require.True(b, ok, "the watch of pod %s/%s ended", tp.ns, clientPod)
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			now := time.Since(start)
			if s.created == 0 {
				s.created = now
				uid <- string(p.UID)
			}
			if s.scheduled == 0 && p.Spec.NodeName != "" {
				s.scheduled = now
			}
			if s.ready == 0 && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			}) {
				s.ready = now
			}
		case <-ctx.Done():
			b.Fatalf("the client of %s: no ping answered and Ready within 2 minutes (steps so far: %+v)", tp.name, s)
		}
	}
	if applied != nil {
		require.NoError(b, <-applied)
	}
	return s, start
}

// logSteps adds the steps that the injected containers' logs date: cmd-nsc's first line (its
// start) and its "connected", cmd-nsc-wait's "every vWire is up". containerd stamps each line as
// it reads it, on this machine's clock.
func logSteps(b *testing.B, cs kubernetes.Interface, ns string, start time.Time, s *steps) {
	at := func(container, msg string) time.Duration {
		raw, err := cs.CoreV1().Pods(ns).GetLogs(clientPod, &corev1.PodLogOptions{Container: container, Timestamps: true}).DoRaw(context.Background())
		require.NoError(b, err, "logs of %s", container)
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			stamp, line, _ := strings.Cut(sc.Text(), " ")
			if msg == "" || strings.Contains(line, "msg="+strconv.Quote(msg)) || strings.Contains(line, "msg="+msg+" ") {
				t, err := time.Parse(time.RFC3339Nano, stamp)
				require.NoError(b, err, "timestamp of a line of %s: %q", container, sc.Text())
				return t.Sub(start)
			}
		}
		b.Fatalf("no line %q in the log of %s:\n%s", msg, container, raw)
		return 0
	}
	s.nscStarted = at(nscName, "")
	s.nscConnected = at(nscName, "connected")
	s.waitDone = at(waitName, "every vWire is up")
}

// pingFromPod waits for the pod's UID, then for a process of the pod on this machine (its
// cgroup is named after the UID), and sends an echo to dst from its network namespace every
// 10 ms until one is answered.
func pingFromPod(ctx context.Context, uid <-chan string, dst netip.Addr) error {
	var id string
	select {
	case id = <-uid:
	case <-ctx.Done():
		return ctx.Err()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var ns netns.NsHandle
	for {
		if pid := podProcess(id); pid != 0 {
			if h, err := netns.GetFromPid(pid); err == nil {
				ns = h
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no process of pod %s on this machine: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
	defer func() { _ = ns.Close() }()
	var conn *icmp.PacketConn
	if err := nsfile.Do(ns, func() (err error) {
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	reply := make([]byte, 1500)
	echoID := os.Getpid() & 0xffff
	for seq := 1; ; seq++ {
		msg, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: echoID, Seq: seq}}).Marshal(nil)
		if err != nil {
			return err
		}
		// Fails (no route) until the vWire is there: the next tick tries again.
		_, _ = conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()})
		deadline := time.Now().Add(10 * time.Millisecond)
		_ = conn.SetReadDeadline(deadline)
		for {
			n, from, err := conn.ReadFrom(reply)
			if err != nil {
				break // the deadline: send again
			}
			m, err := icmp.ParseMessage(1, reply[:n])
			if e, ok := m.Body.(*icmp.Echo); err == nil && ok && m.Type == ipv4.ICMPTypeEchoReply &&
				e.ID == echoID && from.String() == dst.String() {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from %s: %w", dst, ctx.Err())
		}
	}
}

// podProcess returns a process of the pod whose UID is uid, found by its cgroup (under the
// cluster's, in the pids hierarchy of cgroup v1 or in v2's) as podnet.sh finds it, or 0.
func podProcess(uid string) int {
	var pid int
	for _, root := range []string{"/sys/fs/cgroup/pids/vwire-cluster", "/sys/fs/cgroup/vwire-cluster"} {
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || pid != 0 || !d.IsDir() || !strings.Contains(path, "pod"+uid) {
				return nil
			}
			procs, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, field := range strings.Fields(string(procs)) {
				p, err := strconv.Atoi(field)
				exe, exeErr := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
				// runc puts its init into the cgroup before that init enters the pod's
				// namespaces: only the container's own program is surely inside.
				if err == nil && exeErr == nil && !strings.Contains(exe, "runc") {
					pid = p
					break
				}
			}
			return nil
		})
		if pid != 0 {
			return pid
		}
	}
	return 0
}

// webhookSeconds is the API server's total time in mutating admission webhooks so far.
func webhookSeconds(b *testing.B, cs kubernetes.Interface) float64 {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	require.NoError(b, err, "the API server's metrics")
	var total float64
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_sum{") && strings.Contains(line, `type="admit"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(b, err, "metric line %q", line)
			total += v
		}
	}
	return total
}

// client is a client of the cluster whose connections close when b ends (mdtest's leak check
// would see their goroutines).
func client(b *testing.B) kubernetes.Interface {
	cfg, err := clientcmd.BuildConfigFromFlags("", suite.Kubeconfig())
	require.NoError(b, err)
	hc, err := rest.HTTPClientFor(cfg)
	require.NoError(b, err)
	b.Cleanup(func() { utilnet.CloseIdleConnectionsFor(hc.Transport) })
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	require.NoError(b, err)
	return cs
}

// kubectlCmd is the cluster's kubectl with args, run in the workspace's root as the examples are.
func kubectlCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(suite.Bin(), "kubectl"), args...)
	cmd.Dir = workspace
	cmd.Env = append(os.Environ(), "KUBECONFIG="+suite.Kubeconfig())
	return cmd
}

func kubectl(b *testing.B, args ...string) {
	b.Helper()
	out, err := kubectlCmd(args...).CombinedOutput()
	if err != nil {
		b.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
