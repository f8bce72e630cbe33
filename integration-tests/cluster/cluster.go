// Package cluster starts a real Kubernetes on this machine, of one node or a few, for vwire's
// tests and for a person (`make cluster-up`, `make cluster-down`), and removes it without a trace.
//
// It exists because vwire's Kubernetes parts (the registry on custom resources, the admission
// webhook, the deployments and their examples) must be tested on the Kubernetes they meet, not
// on a fake or on a bare API server: pods with images, a container runtime, CNI, Services
// through kube-proxy, cluster DNS, and nodes apart from each other. Every program comes from the
// Go module proxy (`make cluster-bins` builds them into .build/bin): etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy (nftables mode), containerd with
// runc, the CNI plugins bridge, host-local, loopback and portmap, CoreDNS, and a pause program;
// images are tarballs imported into containerd, never pulled.
//
// The first node is this machine's network. Each further node is a kubelet, a containerd and a
// kube-proxy started in a network namespace of their own, joined to this machine by the bridge
// vwnodes0 as the local mesh's nodes are joined to their underlay; this machine routes each
// node's pod subnet to it, so pods and Services work across nodes without NAT or tunnels. Every
// node, the first too, has a mount namespace of its own, a slave of this machine's, where the
// host folders that pods and the kubelet use by fixed paths (/var/lib/networkservicemesh, the
// mesh's hostPath; /run/spire/sockets, the SPIRE agent's; /var/lib/kubelet, where device plugins
// register) are bind mounts of folders in the node's state: each node's nsmgr and SPIRE agent
// serve their own sockets, as on real nodes, and the cluster writes nothing there on the host but
// empty mount points. The PID and cgroup namespaces stay
// this machine's.
//
// Guarantees callers rely on:
//   - Up returns a cluster whose nodes are Ready, whose cluster DNS answers through its Service,
//     with every image of the images folder imported on every node, and an admin kubeconfig at
//     Cluster.Kubeconfig;
//   - Up first removes what an earlier cluster with the same state folder left (a test or a
//     `make cluster-up` that crashed), and removes what it made itself when it fails;
//   - a pod's hostPath /var/lib/networkservicemesh is its node's folder
//     (<state>/nodes/<node>/host/var/lib/networkservicemesh), never the host's or another node's;
//   - Down (and Clean, which works from the options alone, in another process) leaves no
//     process, mount, network or mount namespace, link, nftables table or cgroup of the cluster,
//     puts back the host settings it changed (ip_forward, the kubelet's kernel tunables), removes
//     the host folders it made and the state folder;
//   - one cluster at a time per machine: its ports (6443, 10250) and the names it gives outside
//     its state folder (bridges vwcluster0 and vwnodes0, cgroup /vwire-cluster, kube-proxy's
//     tables) are fixed.
//
// It needs root, cgroupfs (v1 or v2), Debian's nftables (kube-proxy and Clean run nft) and the
// programs of `make cluster-bins`.
package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// binEnv names the variable holding the bin folder (the Makefile exports it).
const binEnv = "VWIRE_KUBE_BIN"

// Options says where the cluster's programs, state and images are. Zero values take defaults.
type Options struct {
	// BinDir holds the programs of `make cluster-bins`, the CNI plugins in its cni folder.
	// Default: $VWIRE_KUBE_BIN, else .build/bin of the workspace.
	BinDir string
	// StateDir holds everything the cluster writes: certificates, configuration, etcd's data,
	// containerd's and the kubelet's folders, logs. Default: .build/cluster of the workspace.
	StateDir string
	// ImagesDir holds image tarballs (`make images`); Up imports every *.tar in it. Default:
	// .build/images of the workspace; missing means none.
	ImagesDir string
	// Nodes is how many nodes the cluster has (default 1, at most 8). The first is on this
	// machine's network; each other one is a kubelet, containerd and kube-proxy in a network
	// namespace of its own, joined to this machine by the bridge vwnodes0. Each has a mount
	// namespace of its own.
	Nodes int
	// Progress, when set, gets a line per step of Up.
	Progress io.Writer
}

// programs are what Up runs from the bin folder; a missing one fails Up before anything starts.
var programs = []string{
	"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
	"kubectl", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "coredns", "pause",
	"cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap",
}

func (o Options) withDefaults() (Options, error) {
	if o.BinDir == "" {
		o.BinDir = os.Getenv(binEnv)
	}
	if o.BinDir == "" || o.StateDir == "" || o.ImagesDir == "" {
		root, err := workspaceRoot()
		if err != nil {
			return o, fmt.Errorf("cluster: %w: give Options.BinDir, StateDir and ImagesDir, or run inside vwire's repository", err)
		}
		o.BinDir = cmp.Or(o.BinDir, filepath.Join(root, ".build", "bin"))
		o.StateDir = cmp.Or(o.StateDir, filepath.Join(root, ".build", "cluster"))
		o.ImagesDir = cmp.Or(o.ImagesDir, filepath.Join(root, ".build", "images"))
	}
	var err error
	for _, d := range []*string{&o.BinDir, &o.StateDir, &o.ImagesDir} {
		if *d, err = filepath.Abs(*d); err != nil {
			return o, err
		}
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		return o, fmt.Errorf("cluster: Options.Nodes is %d; give 1 to %d", o.Nodes, maxNodes)
	}
	// Processes are told apart by the path of their program: it must be the real one.
	if resolved, err := filepath.EvalSymlinks(o.BinDir); err == nil {
		o.BinDir = resolved
	}
	return o, nil
}

// Cluster is a running cluster.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig (user in system:masters) for kubectl.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// Nodes are the cluster's nodes; the first is this machine, whose address the API server
	// advertises.
	Nodes []*Node

	opts     Options
	dir      string
	mu       sync.Mutex // children: Up starts programs while it polls in another goroutine
	children []*child
}

// Up starts a cluster and returns once it is ready to use; see the package comment.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, p := range programs {
		if _, err := os.Stat(filepath.Join(o.BinDir, p)); err != nil {
			return nil, fmt.Errorf("cluster: no %s in %s: run `make cluster-bins` in the workspace root", p, o.BinDir)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("cluster: a node needs root (mounts, network namespaces, cgroups)")
	}
	ip, err := nodeIP()
	if err != nil {
		return nil, err
	}
	if err := portsFree(o); err != nil {
		return nil, err
	}
	if err := clean(ctx, o, false); err != nil {
		return nil, fmt.Errorf("cluster: removing what an earlier cluster in %s left: %w", o.StateDir, err)
	}
	c := &Cluster{opts: o, dir: o.StateDir, Kubeconfig: filepath.Join(o.StateDir, "kubeconfig")}
	for i := range o.Nodes {
		c.Nodes = append(c.Nodes, newNode(i+1, o.StateDir, ip))
	}
	if err := c.up(ctx); err != nil {
		stopErr := c.stop(true)
		return nil, errors.Join(err, stopErr, fmt.Errorf("cluster: the components' logs are in %s", filepath.Join(c.dir, "logs")))
	}
	return c, nil
}

// Down stops the cluster and removes everything it made (see Clean).
func (c *Cluster) Down() error { return c.stop(false) }

func (c *Cluster) stop(keepLogs bool) error {
	// The nodes' mount namespaces then end with their last process, and their mounts with them.
	for _, n := range c.Nodes {
		if n.mountns != nil {
			_ = n.mountns.Close()
			n.mountns = nil
		}
	}
	err := clean(context.Background(), c.opts, keepLogs)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.children {
		<-ch.done // ended by clean; this reaps it and ends its goroutine
	}
	c.children = nil
	return err
}

// Kubectl returns the kubectl of the bin folder with args, reaching the cluster as its admin.
func (c *Cluster) Kubectl(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.opts.BinDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	return cmd
}

// say reports a step to Options.Progress.
func (c *Cluster) say(format string, args ...any) {
	if c.opts.Progress != nil {
		_, _ = fmt.Fprintf(c.opts.Progress, format+"\n", args...)
	}
}

func (c *Cluster) up(ctx context.Context) error {
	start := time.Now()
	for _, d := range []string{"logs", "pki", "etcd", "images"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := recordHost(c.dir); err != nil {
		return err
	}
	if err := c.writeConfig(); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := makeCgroup(n.cgroup()); err != nil {
			return err
		}
		if n.netns != "" {
			if err := joinNode(n); err != nil {
				return err
			}
		}
		ns, err := newMountNamespace(n)
		if err != nil {
			return err
		}
		n.mountns = ns
	}
	c.say("configuration written in %s", c.dir)

	// The containerds and their images come up beside the control plane.
	for _, n := range c.Nodes {
		if err := c.startRuntime(n); err != nil {
			return err
		}
	}
	imported := make(chan error, 1)
	go func() { imported <- c.images(ctx) }()

	if err := c.startControlPlane(ctx); err != nil {
		<-imported
		return err
	}
	c.say("API server ready at https://%s:%d (%.1fs)", c.Nodes[0].IP, apiPort, time.Since(start).Seconds())
	if err := <-imported; err != nil {
		return err
	}
	c.say("images imported (%.1fs)", time.Since(start).Seconds())

	for _, n := range c.Nodes {
		if err := c.startAgents(n); err != nil {
			return err
		}
	}
	if err := c.installDNS(ctx); err != nil {
		return err
	}
	if err := c.waitNodesReady(ctx); err != nil {
		return err
	}
	c.say("%d node(s) Ready (%.1fs)", len(c.Nodes), time.Since(start).Seconds())
	if err := c.waitDNS(ctx); err != nil {
		return err
	}
	c.say("cluster DNS answers on %s (%.1fs)", dnsIP, time.Since(start).Seconds())
	return nil
}

// writeConfig writes the certificates, kubeconfigs and every component's configuration.
func (c *Cluster) writeConfig() error {
	pki := filepath.Join(c.dir, "pki")
	caFile := filepath.Join(pki, "ca.crt")
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		return err
	}
	if err := serviceAccountKey(pki); err != nil {
		return err
	}
	first := c.Nodes[0]
	serving, err := ca.issue("kube-apiserver", nil,
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + clusterDomain, "localhost", first.Name},
		[]net.IP{net.ParseIP(serviceIP), net.IPv4(127, 0, 0, 1), first.IP, hostOnNodesNet})
	if err != nil {
		return err
	}
	if err := serving.write(pki, "apiserver"); err != nil {
		return err
	}
	kubeletClient, err := ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil)
	if err != nil {
		return err
	}
	if err := kubeletClient.write(pki, "apiserver-kubelet-client"); err != nil {
		return err
	}
	local := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	type user struct{ file, server, name, group string }
	users := []user{
		{c.Kubeconfig, local, "vwire-admin", "system:masters"},
		{filepath.Join(pki, "controller-manager.kubeconfig"), local, "system:kube-controller-manager", ""},
		{filepath.Join(pki, "scheduler.kubeconfig"), local, "system:kube-scheduler", ""},
	}
	for _, n := range c.Nodes {
		if err := n.writeConfig(c.opts.BinDir, caFile); err != nil {
			return err
		}
		users = append(users,
			user{filepath.Join(n.dir, "kubelet.kubeconfig"), n.apiServer(), "system:node:" + n.Name, "system:nodes"},
			user{filepath.Join(n.dir, "kube-proxy.kubeconfig"), n.apiServer(), "system:kube-proxy", ""})
	}
	for _, u := range users {
		var groups []string
		if u.group != "" {
			groups = []string{u.group}
		}
		id, err := ca.issue(u.name, groups, nil, nil)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(u.file, u.server, ca.pem, id); err != nil {
			return err
		}
	}
	return nil
}

// startControlPlane starts etcd and the API server, waits until the API server is ready, then
// starts the controller-manager and the scheduler.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	pki := filepath.Join(c.dir, "pki")
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := c.start(nil, "etcd", nil,
		"--name=vwire", "--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=vwire="+peer, "--unsafe-no-fsync",
	); err != nil {
		return err
	}
	if err := c.start(nil, "kube-apiserver", nil,
		"--etcd-servers="+client,
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(apiPort), "--advertise-address="+c.Nodes[0].IP.String(),
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"), "--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"),
		"--kubelet-client-certificate="+filepath.Join(pki, "apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+filepath.Join(pki, "apiserver-kubelet-client.key"),
		// Node names do not resolve here; the kubelet is reached at the address it reports.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc."+clusterDomain,
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		// Down does not wait a minute for open watches: new requests get 429, the rest end after 2 s.
		"--shutdown-send-retry-after=true",
	); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	// The others start once the API server has made its RBAC roles: they leave at start when
	// they are refused.
	if err := c.poll(ctx, time.Minute, "the API server to be ready", func(ctx context.Context) (bool, error) {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	}); err != nil {
		return err
	}
	common := func(kubeconfig string) []string {
		return []string{"--kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1"}
	}
	if err := c.start(nil, "kube-controller-manager", nil, append(common(filepath.Join(pki, "controller-manager.kubeconfig")),
		"--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+serviceCIDR,
	)...); err != nil {
		return err
	}
	return c.start(nil, "kube-scheduler", nil, common(filepath.Join(pki, "scheduler.kubeconfig"))...)
}

// images builds the cluster's own images, waits for the containerds, and imports those and every
// tarball of the images folder into each.
func (c *Cluster) images(ctx context.Context) error {
	tars, err := c.buildImages()
	if err != nil {
		return err
	}
	more, err := filepath.Glob(filepath.Join(c.opts.ImagesDir, "*.tar"))
	if err != nil {
		return err
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() {
			errs[i] = c.poll(ctx, time.Minute, "containerd of "+n.Name+" to listen", func(context.Context) (bool, error) {
				_, err := os.Stat(n.socket())
				return err == nil, nil
			})
			if errs[i] == nil {
				errs[i] = c.importImages(ctx, n.socket(), append(tars, more...))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) waitNodesReady(ctx context.Context) error {
	for _, n := range c.Nodes {
		if err := c.poll(ctx, 2*time.Minute, "node "+n.Name+" to be Ready", func(ctx context.Context) (bool, error) {
			node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return slices.ContainsFunc(node.Status.Conditions, func(cond corev1.NodeCondition) bool {
				return cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue
			}), nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitDNS waits until the cluster DNS, asked at its Service address from this machine (through
// kube-proxy's rules), gives the kubernetes Service's address.
func (c *Cluster) waitDNS(ctx context.Context) error {
	host := "kubernetes.default.svc." + clusterDomain + "."
	return c.poll(ctx, 2*time.Minute, "cluster DNS to resolve "+host, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		addrs, err := lookup(ctx, host)
		return err == nil && slices.Contains(addrs, serviceIP), nil
	})
}

// poll calls done every 100 ms until it says true, returns an error, a component exits, or
// timeout passes.
func (c *Cluster) poll(ctx context.Context, timeout time.Duration, what string, done func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done(ctx)
		if ok || err != nil {
			return err
		}
		if err := c.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// nodeIP returns the address of the interface of the default route: the API server advertises
// it and pods reach the API server there.
func nodeIP() (net.IP, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 || iface.Name == bridgeName || iface.Name == nodesBridge {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4(), nil
			}
		}
	}
	return nil, errors.New("cluster: no interface with an IPv4 address other than loopback; the node needs one to advertise the API server on")
}

// portsFree checks that no other program holds the cluster's fixed ports. A program of an earlier
// cluster with the same state folder may: Clean removes it.
func portsFree(o Options) error {
	ours, err := ourProcesses(o)
	if err != nil {
		return err
	}
	for _, port := range []int{apiPort, 10250} {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err == nil {
			_ = l.Close()
			continue
		}
		if len(ours) > 0 {
			continue // ours, from a run that crashed: Clean stops them
		}
		return fmt.Errorf("cluster: port %d is in use (%v): another cluster runs on this machine; stop it (`make cluster-down`, or Clean with its state folder)", port, err)
	}
	return nil
}

// freePorts returns n TCP ports free on loopback now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// makeCgroup makes a node's parent cgroup, and the folders above it, in every hierarchy: the
// kubelet requires it to exist. A new cpuset cgroup has no CPUs or memory nodes until given its
// parent's.
func makeCgroup(path string) error {
	hierarchies, err := os.ReadDir(cgroupFS)
	if err != nil {
		return err
	}
	for _, h := range hierarchies {
		if !h.IsDir() || strings.Contains(h.Name(), ",") {
			continue // a name like cpu,cpuacct links to its hierarchy
		}
		dir := filepath.Join(cgroupFS, h.Name())
		for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("cluster: make cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
						return fmt.Errorf("cluster: cgroup %s: %w", filepath.Join(dir, f), err)
					}
				}
			}
		}
	}
	return nil
}
