package cluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testOptions keeps the tests' cluster apart from one `make cluster-up` started (.build/cluster):
// a test never removes a person's cluster, and fails on its ports instead.
func testOptions(t testing.TB, imagesDir string) Options {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a cluster needs root (mounts, cgroups, network): run as root, as CI does")
	}
	root, err := workspaceRoot()
	require.NoError(t, err)
	return Options{StateDir: filepath.Join(root, ".build", "cluster-test"), ImagesDir: imagesDir}
}

// registryImage builds the image of cmd-registry-memory (with grpc-health-probe) into a folder of
// its own, as `make images` does, and returns the folder and the image's name.
func registryImage(t testing.TB) (dir, image string) {
	t.Helper()
	dir = t.TempDir()
	out, err := exec.Command("go", "run", "vwire.dev/images", "-out", dir, "-version", "cluster-test", "cmd-registry-memory").CombinedOutput()
	require.NoError(t, err, "build the image of cmd-registry-memory: %s", out)
	return dir, "ghcr.io/vwire/cmd-registry-memory:cluster-test"
}

func TestCluster(t *testing.T) {
	imagesDir, image := registryImage(t)
	opts := testOptions(t, imagesDir)
	o, err := opts.withDefaults()
	require.NoError(t, err)
	before := traces(t, o)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	crashed(t, o)
	c := up(ctx, t, opts)
	serviceAndDNS(ctx, t, c, image, c.Nodes[0].Name, c.Nodes[0].Name)
	nodeFoldersApart(ctx, t, c, image)
	down(t, c, before)
}

// TestTwoNodes runs the server on the second node, in its network namespace, and its client on
// the first: the Service and DNS work across nodes, and kubectl exec reaches the second kubelet.
// Then each node's pods have a /var/lib/networkservicemesh of their node's own.
func TestTwoNodes(t *testing.T) {
	imagesDir, image := registryImage(t)
	opts := testOptions(t, imagesDir)
	opts.Nodes = 2
	o, err := opts.withDefaults()
	require.NoError(t, err)
	before := traces(t, o)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := up(ctx, t, opts)
	require.Len(t, c.Nodes, 2)
	serviceAndDNS(ctx, t, c, image, c.Nodes[1].Name, c.Nodes[0].Name)
	nodeFoldersApart(ctx, t, c, image)
	down(t, c, before)
}

// up starts a cluster that goes down when the test ends, if the test did not take it down.
func up(ctx context.Context, t *testing.T, opts Options) *Cluster {
	t.Helper()
	c, err := Up(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		c.mu.Lock()
		running := c.children != nil
		c.mu.Unlock()
		if running { // the test failed before down
			keepLogs(t, c)
			require.NoError(t, c.Down())
		}
	})
	return c
}

// down takes the cluster down and checks that the machine is as it was before.
func down(t *testing.T, c *Cluster, before map[string][]string) {
	t.Helper()
	keepLogs(t, c)
	require.NoError(t, c.Down())
	require.Equal(t, before, traces(t, c.opts), "the cluster left something behind")
	require.NoDirExists(t, c.opts.StateDir)
}

// serviceAndDNS runs a server pod of image on serverNode behind a ClusterIP Service, and a client
// pod on clientNode that reaches it by the Service's address and by its DNS name (pod networking,
// kube-proxy and CoreDNS in one); then uses the kubectl of the build with the kubeconfig Up wrote
// for logs, exec (both through a kubelet) and the nodes.
func serviceAndDNS(ctx context.Context, t *testing.T, c *Cluster, image, serverNode, clientNode string) {
	t.Helper()
	cs := c.Client
	labels := map[string]string{"app": "registry"}
	on := func(node string) map[string]string { return map[string]string{corev1.LabelHostname: node} }
	_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "registry", Labels: labels},
		Spec: corev1.PodSpec{NodeSelector: on(serverNode), Containers: []corev1.Container{{
			Name: "registry", Image: image, ImagePullPolicy: corev1.PullNever,
			// No SPIRE on this cluster: the registry serves plain gRPC, as the probe speaks it.
			Env: []corev1.EnvVar{{Name: "NSM_LISTEN_ON", Value: "tcp://:5002"}, {Name: "NSM_INSECURE", Value: "true"}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/grpc-health-probe", "-addr=localhost:5002"}}},
				PeriodSeconds: 1,
			},
		}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "registry"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 5002, TargetPort: intstr.FromInt32(5002)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	probe := func(addr string) corev1.Container {
		return corev1.Container{Name: "probe-" + strings.NewReplacer(".", "-", ":", "-").Replace(addr), Image: image,
			ImagePullPolicy: corev1.PullNever, Command: []string{"/bin/grpc-health-probe", "-addr=" + addr, "-connect-timeout=5s"}}
	}
	_, err = cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			NodeSelector:   on(clientNode),
			RestartPolicy:  corev1.RestartPolicyOnFailure, // until the server is ready
			InitContainers: []corev1.Container{probe(svc.Spec.ClusterIP + ":5002")},
			Containers:     []corev1.Container{probe("registry:5002")},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "client", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodSucceeded, nil
	})
	if err != nil {
		out, _ := c.Kubectl("describe", "pods").CombinedOutput()
		t.Fatalf("the client pod did not reach the registry through its Service: %v\n%s", err, out)
	}

	out, err := c.Kubectl("logs", "client").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SERVING")
	out, err = c.Kubectl("exec", "registry", "--", "/bin/grpc-health-probe", "-addr=registry.default.svc."+clusterDomain+":5002").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "SERVING")
	out, err = c.Kubectl("get", "nodes", "-o", "name").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var want []string
	for _, n := range c.Nodes {
		want = append(want, "node/"+n.Name)
	}
	require.Equal(t, want, strings.Fields(string(out)))
}

// nodeFoldersApart runs a pod on each node that serves a socket named after its node in the
// hostPath folder /var/lib/networkservicemesh, as the mesh's nsmgr does, and checks that each pod
// sees its own socket only, that the socket is in its node's copy of the folder, and that the
// host's folder stays empty.
func nodeFoldersApart(ctx context.Context, t *testing.T, c *Cluster, image string) {
	t.Helper()
	cs := c.Client
	socket := func(n *Node) string { return n.Name + ".sock" }
	for _, n := range c.Nodes {
		listen := "unix://" + meshSockets + "/" + socket(n)
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "folder-" + n.Name},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{corev1.LabelHostname: n.Name},
				Containers: []corev1.Container{{
					Name: "registry", Image: image, ImagePullPolicy: corev1.PullNever,
					Env:          []corev1.EnvVar{{Name: "NSM_LISTEN_ON", Value: listen}, {Name: "NSM_INSECURE", Value: "true"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "nsm", MountPath: meshSockets}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/grpc-health-probe", "-addr=" + listen}}},
						PeriodSeconds: 1,
					},
				}},
				Volumes: []corev1.Volume{{Name: "nsm", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: meshSockets, Type: new(corev1.HostPathDirectoryOrCreate),
				}}}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	for _, n := range c.Nodes {
		name := "folder-" + n.Name
		var pod *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			pod = p
			return err == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			}), nil
		})
		if err != nil {
			out, _ := c.Kubectl("describe", "pod", name).CombinedOutput()
			t.Fatalf("pod %s serving in the hostPath folder did not get ready: %v\n%s", name, err, out)
		}
		// The pod's view of the folder, through a process of its container.
		ps, err := processes()
		require.NoError(t, err)
		i := slices.IndexFunc(ps, func(p process) bool {
			return filepath.Base(p.exe) == "cmd-registry-memory" && slices.ContainsFunc(p.cgroups, func(cg string) bool {
				return strings.Contains(cg, "pod"+string(pod.UID))
			})
		})
		require.GreaterOrEqual(t, i, 0, "no process of pod %s on this machine", name)
		require.Equal(t, []string{socket(n)}, dirNames(t, fmt.Sprintf("/proc/%d/root%s", ps[i].pid, meshSockets)), "what pod %s sees in %s", name, meshSockets)
		require.Equal(t, []string{socket(n)}, dirNames(t, n.nodeFolder(meshSockets)), "the copy of %s of node %s", meshSockets, n.Name)
	}
	require.Empty(t, dirNames(t, meshSockets), "the host's %s", meshSockets)
}

// dirNames returns the names in a folder.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// crashed leaves a cluster as a run that crashed would: started by the cmd in the state folder
// (the process that started it is gone), then its kubelet and containerd killed, so its pods are
// left to a shim and no runtime answers for them. Up must remove all of it.
func crashed(t *testing.T, o Options) {
	t.Helper()
	out, err := exec.Command("go", "run", "./cmd/cluster", "-state", o.StateDir, "-images", t.TempDir(), "up").CombinedOutput()
	require.NoError(t, err, "cluster up: %s", out)
	ps, err := ourProcesses(o)
	require.NoError(t, err)
	for _, p := range ps {
		if name := filepath.Base(p.exe); name == "kubelet" || name == "containerd" {
			require.NoError(t, syscall.Kill(p.pid, syscall.SIGKILL))
		}
	}
}

// keepLogs copies the components' logs out of the state folder, which Down removes, when the
// test failed.
func keepLogs(t *testing.T, c *Cluster) {
	if !t.Failed() {
		return
	}
	kept := filepath.Join(os.TempDir(), fmt.Sprintf("vwire-cluster-logs-%d", time.Now().UnixNano()))
	if err := exec.Command("cp", "-r", filepath.Join(c.dir, "logs"), kept).Run(); err == nil {
		t.Logf("the components' logs are in %s", kept)
	}
}

// vethName is the name the bridge plugin gives a pod's veth on the host.
var vethName = regexp.MustCompile(`^veth[0-9a-f]{8}$`)

// nodeVeth is the name of a node's veth on the nodes' bridge.
var nodeVeth = regexp.MustCompile(`^vwnode[0-9]+$`)

// traces lists what a cluster leaves on the machine when it is not removed: its processes
// (programs of the bin folder, anything in the pods' cgroups), mounts under the state folder and
// network namespaces containerd made, the CNI bridge and pods' veths, files in the host's folders
// where Kubernetes, containerd and CNI write by default, every nftables table, the pods' cgroups
// and the host settings the cluster changes. Other tests may run beside this one, so
// processes, links and namespaces are those the cluster would make, by their names and paths:
// a program of the bin folder counts when its arguments name the state folder (envtest runs
// the same kube-apiserver and etcd elsewhere), a CNI plugin always (it takes no arguments).
func traces(t testing.TB, o Options) map[string][]string {
	t.Helper()
	tr := map[string][]string{}
	ps, err := processes()
	require.NoError(t, err)
	for _, p := range ps {
		inPod := slices.ContainsFunc(p.cgroups, func(cg string) bool { return strings.HasPrefix(cg, "/"+cgroupRoot) })
		cluster := filepath.Dir(p.exe) == o.BinDir && strings.Contains(strings.Join(p.cmdline, " "), o.StateDir)
		if cluster || filepath.Dir(p.exe) == filepath.Join(o.BinDir, "cni") || inPod {
			tr["processes"] = append(tr["processes"], fmt.Sprintf("%d %s", p.pid, strings.Join(p.cmdline, " ")))
		}
	}
	f, err := os.Open(hostMountinfo)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		mp := unescapeMount(fields[4])
		fstype := fields[slices.Index(fields, "-")+1]
		if strings.HasPrefix(mp, o.StateDir) || strings.HasPrefix(mp, shimDir) || strings.HasPrefix(mp, "/var/lib/kubelet") {
			tr["mounts"] = append(tr["mounts"], mp)
		}
		// containerd's own namespaces are under its state folder; cni-* is where it would put them otherwise.
		if fstype == "nsfs" && (strings.HasPrefix(mp, o.StateDir) || strings.HasPrefix(mp, "/run/netns/cni-")) {
			tr["network namespaces"] = append(tr["network namespaces"], mp)
		}
	}
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	require.NoError(t, err)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if name == bridgeName || name == nodesBridge || vethName.MatchString(name) || nodeVeth.MatchString(name) {
				tr["links"] = append(tr["links"], name)
			}
		}
	}
	for _, dir := range append(hostPaths, "/var/log/pods", "/var/lib/containerd", "/etc/cni", "/opt/cni") {
		_ = filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
			if err == nil {
				tr["files"] = append(tr["files"], path)
			}
			return nil
		})
	}
	tr["nftables tables"], err = nftList()
	require.NoError(t, err)
	cgroups, err := filepath.Glob(filepath.Join(cgroupFS, "*", cgroupRoot))
	require.NoError(t, err)
	tr["cgroups"] = cgroups
	for _, s := range sysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			tr["sysctls"] = append(tr["sysctls"], s+"="+strings.TrimSpace(string(b)))
		}
	}
	for k, v := range tr {
		if len(v) == 0 {
			delete(tr, k)
		}
	}
	return tr
}

// BenchmarkUp measures the cluster's start from built programs (nodes Ready, DNS answering, the
// cluster's own images imported), with one node and with two.
func BenchmarkUp(b *testing.B) {
	for _, nodes := range []int{1, 2} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			opts := testOptions(b, b.TempDir())
			opts.Nodes = nodes
			for b.Loop() {
				c, err := Up(context.Background(), opts)
				require.NoError(b, err)
				b.StopTimer()
				require.NoError(b, c.Down())
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDown measures the removal of a cluster with its DNS pod running.
func BenchmarkDown(b *testing.B) {
	opts := testOptions(b, b.TempDir())
	for b.Loop() {
		b.StopTimer()
		c, err := Up(context.Background(), opts)
		require.NoError(b, err)
		b.StartTimer()
		require.NoError(b, c.Down())
	}
}
