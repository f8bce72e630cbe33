package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// The cluster's address plan. Node i (from 1) gives its pods 10.244.<i-1>.0/24, a part of
// podCIDR; nodes after the first live in network namespaces joined by the bridge nodesBridge on
// nodesNet, where this machine is .1 and node i is .i.
const (
	apiPort       = 6443
	serviceCIDR   = "10.96.0.0/16"
	serviceIP     = "10.96.0.1" // the kubernetes Service: the first address of serviceCIDR
	dnsIP         = "10.96.0.10"
	podCIDR       = "10.244.0.0/16"
	clusterDomain = "cluster.local"
	nodesBridge   = "vwnodes0"
	nodesNet      = "10.245.0.0/24"
	maxNodes      = 8
	// Images Up builds from the programs of the bin folder; the names say they are local.
	pauseImage   = "localhost/vwire/pause:v1"
	corednsImage = "localhost/vwire/coredns:v1.15.0"
)

// hostOnNodesNet is this machine's address on the nodes' bridge, where nodes after the first
// reach the API server.
var hostOnNodesNet = net.IPv4(10, 245, 0, 1).To4()

// Node is one node of the cluster: a kubelet, its containerd and a kube-proxy.
type Node struct {
	Name string
	IP   net.IP // where the API server reaches its kubelet

	index int    // from 1
	dir   string // its folder in the state folder
	netns string // the file of its network namespace; empty for the first node, on this machine's
	// mountns keeps the node's mount namespace (newMountNamespace) while Up starts its programs;
	// once they run, they keep it.
	mountns *os.File
}

func newNode(index int, stateDir string, firstIP net.IP) *Node {
	n := &Node{Name: fmt.Sprintf("vwire-node%d", index), index: index, IP: firstIP}
	n.dir = filepath.Join(stateDir, "nodes", n.Name)
	if index > 1 {
		n.IP = net.IPv4(10, 245, 0, byte(index)).To4()
		n.netns = filepath.Join(stateDir, "netns", n.Name)
	}
	return n
}

func (n *Node) podSubnet() string { return fmt.Sprintf("10.244.%d.0/24", n.index-1) }
func (n *Node) cgroup() string    { return "/" + cgroupRoot + "/" + n.Name }
func (n *Node) socket() string    { return filepath.Join(n.dir, "containerd", "containerd.sock") }

// apiServer is the API server's URL as the node's programs reach it.
func (n *Node) apiServer() string {
	ip := n.IP
	if n.netns != "" {
		ip = hostOnNodesNet
	}
	return fmt.Sprintf("https://%s:%d", ip, apiPort)
}

// containerdConfig is containerd's configuration (version 3): everything under the node's folder,
// the runc of the bin folder without systemd cgroups, overlayfs, the CNI plugins of the bin
// folder, and restrict_oom_score_adj, without which no sandbox starts on a machine whose bounding
// set lacks CAP_SYS_RESOURCE.
func (n *Node) containerdConfig(binDir string) string {
	d := filepath.Join(n.dir, "containerd")
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
# NRI would listen on /var/run/nri; nothing here uses it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = %[3]q

[plugins.'io.containerd.internal.v1.opt']
  path = %[4]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %[6]q
        Root = %[9]q
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[7]q]
    conf_dir = %[8]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.socket(), filepath.Join(d, "opt"),
		pauseImage, filepath.Join(binDir, "runc"), filepath.Join(binDir, "cni"), filepath.Join(n.dir, "cni", "net.d"), filepath.Join(d, "runc"))
}

// cniConfig is the pods' network: a bridge with host-local addresses from the node's pod subnet,
// the bridge the pods' gateway, hostPort through nftables.
func (n *Node) cniConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       cniNetwork,
		"plugins": []map[string]any{{
			"type":        "bridge",
			"bridge":      bridgeName,
			"isGateway":   true,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.podSubnet()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.dir, "cni", "ipam"),
			},
		}, {
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"backend":      "nftables",
		}},
	}, "", "  ")
}

// kubeletConfig keeps the kubelet on this machine's terms: cgroup v1 through cgroupfs, pods'
// cgroups under the node's cgroup, no iptables chains, no image garbage collection (the images are
// imported, not pulled, and would not come back), eviction only when the disk is really full.
func (n *Node) kubeletConfig(caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
containerRuntimeEndpoint: unix://%[2]s
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[3]q
authorization:
  mode: Webhook
clusterDNS: [%[4]s]
clusterDomain: %[5]s
makeIPTablesUtilChains: false
failSwapOn: false
podLogsDir: %[6]q
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.inodesFree: 1%%
`, n.cgroup(), n.socket(), caFile, dnsIP, clusterDomain, filepath.Join(n.dir, "pod-logs"))
}

// kubeProxyConfig: nftables mode; conntrack settings left as the host has them (0 keeps them).
func (n *Node) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %[1]q
hostnameOverride: %[2]s
clusterCIDR: %[3]s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, filepath.Join(n.dir, "kube-proxy.kubeconfig"), n.Name, podCIDR)
}

// writeConfig writes the node's configuration files into its folder.
func (n *Node) writeConfig(binDir, caFile string) error {
	cni, err := n.cniConfig()
	if err != nil {
		return err
	}
	for rel, content := range map[string][]byte{
		"containerd/config.toml":      []byte(n.containerdConfig(binDir)),
		"cni/net.d/10-vwire.conflist": cni,
		"kubelet.yaml":                []byte(n.kubeletConfig(caFile)),
		"kube-proxy.yaml":             []byte(n.kubeProxyConfig()),
	} {
		file := filepath.Join(n.dir, rel)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startRuntime starts the node's containerd (with the bin folder on its PATH, where it finds the
// shim and the CNI plugins find nft).
func (c *Cluster) startRuntime(n *Node) error {
	return c.start(n, "containerd", []string{"PATH=" + c.opts.BinDir + ":" + os.Getenv("PATH")},
		"--config", filepath.Join(n.dir, "containerd", "config.toml"))
}

// startAgents starts the node's kubelet and kube-proxy, in the node's namespaces as its
// containerd (start).
//
// The kubelet must share containerd's mount namespace: it checks and makes a pod's hostPath
// folders (type Directory, DirectoryOrCreate) in its own view, and containerd mounts them into
// the containers from its view, so with two views a node's nsmgr would make its socket folder in
// one and serve it in the other. The volumes it mounts for pods (secrets, projected tokens)
// under its root folder must be seen by containerd too; in one namespace they are whatever the
// host's propagation. And its device plugins' folder, fixed at /var/lib/kubelet/device-plugins,
// is then the node's own (nodeFolders).
func (c *Cluster) startAgents(n *Node) error {
	if err := c.start(n, "kubelet", nil,
		"--config="+filepath.Join(n.dir, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(n.dir, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(n.dir, "kubelet"),
		"--cert-dir="+filepath.Join(n.dir, "kubelet-pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(),
	); err != nil {
		return err
	}
	return c.start(n, "kube-proxy", nil, "--config="+filepath.Join(n.dir, "kube-proxy.yaml"))
}
