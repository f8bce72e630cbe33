package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Names the cluster gives to what it makes outside its state folder. There is one cluster per
// machine (its ports are fixed), so these are fixed too, and Clean finds them after a crash.
const (
	bridgeName = "vwcluster0"    // the CNI bridge
	cniNetwork = "vwire-cluster" // the CNI network
	cgroupRoot = "vwire-cluster" // every pod's cgroup is under it, in each hierarchy
	cniCache   = "/var/lib/cni"  // libcni's cache; containerd gives no way to move it
	shimDir    = "/run/containerd"
	cgroupFS   = "/sys/fs/cgroup"
	// Paths the kubelet does not take from its root folder or configuration.
	kubeletDir     = "/var/lib/kubelet"
	containersLogs = "/var/log/containers" // a link per container to its log under podLogsDir
	// The mesh's hostPath volume (deployments-k8s/apps); each node has its own (nodeFolders).
	meshSockets = "/var/lib/networkservicemesh"
	// The SPIRE agent's socket folder (deployments-k8s/apps/spire-agent), one agent per node; Up
	// may make its parent too.
	spireSockets = "/run/spire/sockets"
)

// hostPaths are the folders outside the state folder where the cluster's programs write, or
// where Up makes the mount points of nodeFolders.
var hostPaths = []string{cniCache, shimDir, kubeletDir, containersLogs, meshSockets, filepath.Dir(spireSockets), spireSockets}

// nftTables are the nftables tables kube-proxy (nftables mode) and the portmap plugin make.
var nftTables = [][2]string{{"ip", "kube-proxy"}, {"ip6", "kube-proxy"}, {"ip", "cni_hostport"}, {"ip6", "cni_hostport"}}

// sysctls are the host settings the cluster changes: the bridge plugin turns on forwarding, the
// kubelet sets its kernel tunables. Up records them; Clean puts them back.
var sysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv6/conf/all/forwarding",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// hostState is what Up found on the machine before it changed anything, kept in host.json of
// the state folder so that Clean can restore it even after the process that ran Up died.
type hostState struct {
	Sysctls map[string]string
	// Folders of hostPaths that were not there before; Clean removes them when they are empty
	// again (after removing what the cluster put there).
	Made []string
}

func recordHost(dir string) error {
	h := hostState{Sysctls: map[string]string{}}
	for _, s := range sysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			continue // not on this kernel (IPv6 off): nothing to restore
		}
		h.Sysctls[s] = strings.TrimSpace(string(b))
	}
	for _, d := range hostPaths {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			h.Made = append(h.Made, d)
		}
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "host.json"), b, 0o644)
}

// Clean removes everything a cluster with these options made, running or left by a run that
// crashed: it stops the pods through containerd (so the CNI plugins remove their veths, leases
// and namespaces), then the kubelet, kube-proxy, containerd and its shims, any process left in
// the pods' cgroups, the control plane and etcd; unmounts what is mounted under the state
// folder; deletes the CNI bridge and what is attached to it, the nftables tables, the cgroups;
// restores the host settings Up recorded; and removes the state folder. Up calls it first.
func Clean(ctx context.Context, opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	return clean(ctx, o, false)
}

// stopOrder is the order in which programs stop: the kubelet first, so that it restarts no pod
// while they are stopped; the API server late, so that the others stop while it answers.
var stopOrder = [][]string{
	{"kubelet"},
	{"kube-proxy", "containerd"},
	{"containerd-shim-runc-v2", "runc"},
	{"kube-scheduler", "kube-controller-manager"},
	{"kube-apiserver"},
	{"etcd"},
}

func clean(ctx context.Context, o Options, keepLogs bool) error {
	var errs []error
	ours, err := ourProcesses(o)
	if err != nil {
		return err
	}
	stop := func(names ...string) {
		var pids []int
		for _, p := range ours {
			if slices.Contains(names, filepath.Base(p.exe)) {
				pids = append(pids, p.pid)
			}
		}
		if err := stopAll(pids, 15*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	stop(stopOrder[0]...)
	for _, p := range ours {
		if filepath.Base(p.exe) != "containerd" {
			continue
		}
		// Its socket is beside its configuration: <node>/containerd/config.toml.
		if i := slices.Index(p.cmdline, "--config"); i >= 0 && i+1 < len(p.cmdline) {
			if err := stopPods(ctx, filepath.Join(filepath.Dir(p.cmdline[i+1]), "containerd.sock")); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, names := range stopOrder[1:] {
		stop(names...)
	}
	// Whatever is still ours: pods whose sandbox could not be stopped, programs not named above.
	if ours, err = ourProcesses(o); err != nil {
		return err
	}
	var pids []int
	for _, p := range ours {
		pids = append(pids, p.pid)
	}
	if err := stopAll(pids, time.Second); err != nil {
		errs = append(errs, err)
	}

	// Links first: a veth whose other end is in a namespace goes at once with it, while a
	// namespace unmounted last goes away later, in the background, and its veths with it.
	errs = append(errs, deleteLinks(), unmountUnder(o.StateDir), deleteTables(), removeCgroups())
	errs = append(errs, restoreHost(o.StateDir)...)
	errs = append(errs, removeState(o.StateDir, keepLogs))
	return errors.Join(errs...)
}

// ourProcesses returns the processes of the cluster: those running a program of the bin folder
// with the state folder in their arguments (shims name containerd's socket there), and those in
// the pods' cgroups.
func ourProcesses(o Options) ([]process, error) {
	all, err := processes()
	if err != nil {
		return nil, err
	}
	var ours []process
	for _, p := range all {
		mine := filepath.Dir(p.exe) == o.BinDir && slices.ContainsFunc(p.cmdline, func(arg string) bool {
			return strings.Contains(arg, o.StateDir)
		})
		inPod := slices.ContainsFunc(p.cgroups, func(cg string) bool {
			return cg == "/"+cgroupRoot || strings.HasPrefix(cg, "/"+cgroupRoot+"/")
		})
		if mine || inPod {
			ours = append(ours, p)
		}
	}
	return ours, nil
}

// stopPods stops every container with a grace period, then stops and removes every pod sandbox,
// through the CRI: that is what makes containerd run the CNI DEL and its shims exit.
func stopPods(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("cluster: stop pods: %w", err)
	}
	defer func() { _ = conn.Close() }()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("cluster: stop pods: list containers on %s: %w", socket, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cs.GetContainers()))
	for i, c := range cs.GetContainers() {
		wg.Go(func() {
			_, errs[i] = rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.GetId(), Timeout: 10})
		})
	}
	wg.Wait()
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("cluster: stop pods: list sandboxes on %s: %w", socket, err)
	}
	for _, sb := range sbs.GetItems() {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("cluster: stop pod %s/%s: %w", sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("cluster: remove pod %s/%s: %w", sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// hostMountinfo lists the mounts of the calling thread's namespace, this machine's. Not
// /proc/self: that is the main thread's, which may be the one that made a node's namespaces and
// stays in them (newMountNamespace).
const hostMountinfo = "/proc/thread-self/mountinfo"

// mountsUnder returns the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open(hostMountinfo)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return mps, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes of spaces, tabs, newlines and backslashes.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder unmounts everything under dir: the kubelet's volumes, containerd's snapshots, shm
// and network namespaces. A mount still busy is detached, so the folder can go.
func unmountUnder(dir string) error {
	for range 10 { // mounts stack; each pass takes the top ones
		mps, err := mountsUnder(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil {
				_ = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
	}
	mps, _ := mountsUnder(dir)
	return fmt.Errorf("cluster: still mounted under %s: %s", dir, strings.Join(mps, ", "))
}

// deleteLinks deletes this machine's CNI bridge and the nodes' bridge with every link attached to
// them: a pod's veth stays when its namespace outlived containerd.
func deleteLinks() error {
	links, err := netlink.LinkList()
	// Links go away meanwhile with the namespaces of the processes just stopped, which
	// interrupts the dump: ask again.
	for range 10 {
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		links, err = netlink.LinkList()
	}
	if err != nil {
		return fmt.Errorf("cluster: list links: %w", err)
	}
	var errs []error
	for _, name := range []string{bridgeName, nodesBridge} {
		br, err := netlink.LinkByName(name)
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster: find bridge %s: %w", name, err))
			continue
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				// Gone meanwhile with its namespace: that is what was wanted.
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, fmt.Errorf("cluster: delete %s of bridge %s: %w", l.Attrs().Name, name, err))
				}
			}
		}
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("cluster: delete bridge %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// nftList returns the machine's nftables tables as "family name" lines.
func nftList() ([]string, error) {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil, fmt.Errorf("cluster: nft list tables: %w (install Debian's nftables)", err)
	}
	var tables []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if t, ok := strings.CutPrefix(line, "table "); ok {
			tables = append(tables, t)
		}
	}
	return tables, nil
}

func deleteTables() error {
	tables, err := nftList()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range nftTables {
		if slices.Contains(tables, t[0]+" "+t[1]) {
			if out, err := exec.Command("nft", "delete", "table", t[0], t[1]).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("cluster: nft delete table %s %s: %v: %s", t[0], t[1], err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the pods' cgroups, deepest first, in every hierarchy.
func removeCgroups() error {
	roots, err := filepath.Glob(filepath.Join(cgroupFS, "*", cgroupRoot))
	if err != nil {
		return err
	}
	// A cgroup whose last process just ended may stay busy a moment (its parent reaps it late,
	// the kernel takes it offline in the background): a busy one is tried again for a while.
	deadline := time.Now().Add(10 * time.Second)
	var errs []error
	for _, root := range roots {
		for _, d := range foldersDeepestFirst(root) {
			err := unix.Rmdir(d)
			for errors.Is(err, unix.EBUSY) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				err = unix.Rmdir(d)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("cluster: remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// restoreHost removes what the cluster's programs wrote outside the state folder (libcni's cache
// files, the kubelet's log links), puts back the settings recorded in host.json and removes the
// folders of hostPaths the cluster made.
func restoreHost(dir string) []error {
	var errs []error
	// libcni keeps a result per sandbox and network, removed by a DEL that a crashed containerd
	// never ran: the sandboxes are those containerd knows under the state folder.
	sandboxes, _ := filepath.Glob(filepath.Join(dir, "nodes", "*", "containerd", "*", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
	for _, sb := range sandboxes {
		results, _ := filepath.Glob(filepath.Join(cniCache, "results", "*-"+filepath.Base(sb)+"-*"))
		for _, f := range results {
			errs = append(errs, os.Remove(f))
		}
	}
	logs, _ := filepath.Glob(filepath.Join(containersLogs, "*.log"))
	for _, l := range logs {
		if to, err := os.Readlink(l); err == nil && strings.HasPrefix(to, dir+"/") {
			errs = append(errs, os.Remove(l))
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "host.json"))
	if errors.Is(err, os.ErrNotExist) {
		return errs
	}
	var h hostState
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	if err != nil {
		return append(errs, fmt.Errorf("cluster: read %s/host.json: %w", dir, err))
	}
	for s, v := range h.Sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("cluster: restore sysctl %s=%s: %w", s, v, err))
		}
	}
	for _, d := range h.Made {
		removeEmpty(d)
	}
	return errs
}

// removeEmpty removes the empty folders under dir, and dir if it is empty then: files that
// something else put there since Up stay.
func removeEmpty(dir string) {
	for _, d := range foldersDeepestFirst(dir) {
		_ = unix.Rmdir(d)
	}
}

// foldersDeepestFirst returns dir and the folders under it, each after the folders it holds.
func foldersDeepestFirst(dir string) []string {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs) // WalkDir visits a folder before what it holds
	return dirs
}

// removeState removes the state folder; with keepLogs, its logs stay for a person to read.
func removeState(dir string, keepLogs bool) error {
	if !keepLogs {
		return os.RemoveAll(dir)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for _, e := range entries {
		if e.Name() != "logs" {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(append(errs, err)...)
}
