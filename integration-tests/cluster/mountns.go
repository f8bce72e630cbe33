package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// nodeFolders are the host folders each node has a private copy of, in its mount namespace: the
// mesh's hostPath (deployments-k8s/apps), where each node's nsmgr serves its socket, the SPIRE
// agent's, where each node's agent serves the Workload API, and the kubelet's folder outside its
// root folder, where its device plugins register. On the host they are only empty mount points.
var nodeFolders = []string{meshSockets, spireSockets, kubeletDir}

// nodeFolder is where node n keeps its copy of the host folder path.
func (n *Node) nodeFolder(path string) string {
	return filepath.Join(n.dir, "host", strings.TrimPrefix(path, "/"))
}

// newMountNamespace gives node n a mount namespace of its own, where each of nodeFolders is a
// bind mount of the node's copy, and returns a descriptor that keeps it until closed. Its mounts
// are slaves of this machine's: a mount made on the host later is seen on the node, never the
// other way round, so what the node's kubelet and containerd mount (volumes, root filesystems,
// network namespaces) stays out of the host's view and goes with the namespace when its last
// process ends. The mount points are made on the host first (Up recorded which folders were
// missing; Clean removes them).
//
// Go's SysProcAttr.Unshareflags would give each program a namespace of its own, all private; the
// kubelet and containerd must share one (see startAgents), so the namespace is made once on a
// thread and entered by each program's start (inNode).
func newMountNamespace(n *Node) (*os.File, error) {
	for _, path := range nodeFolders {
		for _, d := range []string{path, n.nodeFolder(path)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("cluster: mount namespace of %s: %w", n.Name, err)
			}
		}
	}
	type result struct {
		ns  *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		// Never unlocked: the thread leaves this machine's mount namespace and ends with the goroutine.
		runtime.LockOSThread()
		ns, err := func() (*os.File, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return nil, fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
				return nil, fmt.Errorf("make / a slave: %w", err)
			}
			for _, path := range nodeFolders {
				if err := unix.Mount(n.nodeFolder(path), path, "", unix.MS_BIND, ""); err != nil {
					return nil, fmt.Errorf("bind %s on %s: %w", n.nodeFolder(path), path, err)
				}
			}
			return os.Open(fmt.Sprintf("/proc/self/task/%d/ns/mnt", unix.Gettid()))
		}()
		res <- result{ns, err}
	}()
	r := <-res
	if r.err != nil {
		return nil, fmt.Errorf("cluster: mount namespace of %s: %w", n.Name, r.err)
	}
	return r.ns, nil
}

// inNode calls f on a thread in node n's mount namespace, and in its network namespace when it
// has one: a process f starts is born there. Entering a mount namespace needs a thread that
// shares no filesystem attributes with the others (setns refuses otherwise), hence CLONE_FS.
func inNode(n *Node, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves this machine's namespaces and ends with the goroutine.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("cluster: unshare the filesystem attributes to enter %s: %w", n.Name, err)
			}
			if err := unix.Setns(int(n.mountns.Fd()), unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("cluster: enter the mount namespace of %s: %w", n.Name, err)
			}
			if n.netns != "" {
				if err := enterNetns(n.netns); err != nil {
					return fmt.Errorf("cluster: enter the network namespace of %s: %w", n.Name, err)
				}
			}
			return f()
		}()
	}()
	return <-errc
}
