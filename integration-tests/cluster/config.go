package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// The cluster's address plan. Pods of the node get podSubnet, a part of podCIDR.
const (
	apiPort       = 6443
	serviceCIDR   = "10.96.0.0/16"
	serviceIP     = "10.96.0.1" // the kubernetes Service: the first address of serviceCIDR
	dnsIP         = "10.96.0.10"
	podCIDR       = "10.244.0.0/16"
	podSubnet     = "10.244.0.0/24"
	clusterDomain = "cluster.local"
	// Images Up builds from the programs of the bin folder; the names say they are local.
	pauseImage   = "localhost/vwire/pause:v1"
	corednsImage = "localhost/vwire/coredns:v1.15.0"
)

// containerdConfig is containerd's configuration (version 3): everything under the state folder,
// the runc of the bin folder without systemd cgroups, overlayfs, the CNI plugins of the bin
// folder, and restrict_oom_score_adj, without which no sandbox starts on a machine whose bounding
// set lacks CAP_SYS_RESOURCE.
func (c *Cluster) containerdConfig() string {
	d := filepath.Join(c.dir, "containerd")
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
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.socket(), filepath.Join(d, "opt"),
		pauseImage, filepath.Join(c.opts.BinDir, "runc"), filepath.Join(c.opts.BinDir, "cni"), filepath.Join(c.dir, "cni", "net.d"), filepath.Join(d, "runc"))
}

func (c *Cluster) socket() string { return filepath.Join(c.dir, "containerd", "containerd.sock") }

// cniConfig is the pods' network: a bridge with host-local addresses from podSubnet, the bridge
// the pods' gateway, hostPort through nftables.
func (c *Cluster) cniConfig() ([]byte, error) {
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
				"ranges":  [][]map[string]string{{{"subnet": podSubnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(c.dir, "cni", "ipam"),
			},
		}, {
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"backend":      "nftables",
		}},
	}, "", "  ")
}

// kubeletConfig keeps the kubelet on this machine's terms: cgroup v1 through cgroupfs, pods'
// cgroups under cgroupRoot, no iptables chains, no image garbage collection (the images are
// imported, not pulled, and would not come back), eviction only when the disk is really full.
func (c *Cluster) kubeletConfig() string {
	d := filepath.Join(c.dir, "kubelet")
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
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
`, cgroupRoot, c.socket(), filepath.Join(c.dir, "pki", "ca.crt"), dnsIP, clusterDomain, filepath.Join(d, "pod-logs"))
}

// kubeProxyConfig: nftables mode; conntrack settings left as the host has them (0 keeps them).
func (c *Cluster) kubeProxyConfig() string {
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
`, filepath.Join(c.dir, "pki", "kube-proxy.kubeconfig"), c.NodeName, podCIDR)
}

// writeFile writes content at the state folder's path rel, making its folder.
func (c *Cluster) writeFile(rel string, content []byte) error {
	file := filepath.Join(c.dir, rel)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, content, 0o644)
}
