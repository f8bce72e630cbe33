package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
)

func TestWaitHelp(t *testing.T) {
	code, stdout, stderr := cmdtest.Run(t, bin, nil, "wait", "--help")
	require.Zero(t, code, stderr)
	cmdtest.Golden(t, filepath.Join("testdata", "wait-help.golden"), stdout)
}

// startWait runs `cmd-nsc wait` in a network namespace of its own, and returns it and a handle
// on that namespace, in which the test makes the interfaces the client's forwarder would.
func startWait(t *testing.T, env ...string) (*cmdtest.Process, *netlink.Handle) {
	return startWaitWrapped(t, nil, env...)
}

// startWaitWrapped is startWait with `cmd-nsc wait` started through the command wrap (setpriv).
func startWaitWrapped(t *testing.T, wrap []string, env ...string) (*cmdtest.Process, *netlink.Handle) {
	if os.Geteuid() != 0 {
		t.Skip("cmd-nsc wait is tested in a network namespace of its own, which needs root")
	}
	p := cmdtest.Start(t, "unshare", env, append(append([]string{"--net"}, wrap...), bin, "wait")...)
	host, err := os.Readlink("/proc/self/ns/net")
	require.NoError(t, err)
	// Until unshare has made the namespace, the process is in the test's: never touch that one.
	require.Eventually(t, func() bool {
		own, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.Pid()))
		return err == nil && own != host
	}, cmdtest.WaitLimit, 5*time.Millisecond, "unshare made no network namespace")
	ns, err := netns.GetFromPid(p.Pid())
	require.NoError(t, err)
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(func() { // the namespace, and the interfaces in it, go with the last reference
		h.Close()
		_ = ns.Close()
	})
	return p, h
}

// addVeth makes a veth pair name/peer in h's namespace and sets the ends named in up up.
func addVeth(t *testing.T, h *netlink.Handle, name, peer string, up ...string) {
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}))
	for _, n := range up {
		link, err := h.LinkByName(n)
		require.NoError(t, err)
		require.NoError(t, h.LinkSetUp(link))
	}
}

func TestWaitEndsOnceEveryInterfaceIsUp(t *testing.T) {
	p, h := startWait(t, "NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1,kernel://vpn@corp.example", "NSM_REQUEST_TIMEOUT=1m")
	addVeth(t, h, "nsm-1", "peer-1", "nsm-1") // up, but without carrier: the far end is down
	addVeth(t, h, "nsm-3", "peer-3", "nsm-3", "peer-3")
	link, err := h.LinkByName("peer-1")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(link))
	p.WaitStderr(`msg="interface up" cmd="cmd-nsc wait" interface=nsm-1`)
	require.False(t, p.Exited(), "nsm-2 is missing still")
	require.NotContains(t, p.Stderr(), "interface=nsm-3")

	addVeth(t, h, "nsm-2", "peer-2", "nsm-2", "peer-2")
	require.Zero(t, p.Wait(), p.Stderr())
	require.Contains(t, p.Stderr(), `msg="every vWire is up" cmd="cmd-nsc wait" interfaces="[nsm-1 nsm-2]"`)
}

// A pod's containers get the container runtime's default capabilities, without CAP_NET_ADMIN
// (or CAP_SYS_ADMIN): the wait must work with those, as it runs in every injected pod.
func TestWaitNeedsNoAdminCapability(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil && os.Geteuid() == 0 { // without root, startWaitWrapped skips
		t.Fatal("setpriv is needed to drop capabilities: install util-linux (.ci/run does)")
	}
	p, h := startWaitWrapped(t, []string{setpriv, "--bounding-set=-net_admin,-sys_admin", "--inh-caps=-all"},
		"NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1", "NSM_REQUEST_TIMEOUT=1m")
	addVeth(t, h, "nsm-1", "peer-1", "nsm-1", "peer-1")
	require.Zero(t, p.Wait(), p.Stderr())
	require.Contains(t, p.Stderr(), `msg="every vWire is up"`)
}

func TestWaitGivesUpAfterTheTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	p, h := startWait(t, "NSM_LOG_LEVEL=ERROR", "NSM_NETWORK_SERVICES=kernel://a/nsm-1,kernel://b/nsm-2,kernel://c/nsm-3", "NSM_REQUEST_TIMEOUT="+timeout.String())
	addVeth(t, h, "nsm-1", "peer-1", "nsm-1")
	addVeth(t, h, "nsm-2", "peer-2", "nsm-2", "peer-2")
	require.Equal(t, 1, p.Wait())
	require.Equal(t, "cmd-nsc wait: no vWire within NSM_REQUEST_TIMEOUT=3s: nsm-1 is down, nsm-3 is missing; the client's log says why\n", p.Stderr())
}

func TestWaitBadConfiguration(t *testing.T) {
	line, _ := cmdtest.Fails(t, bin, []string{"NSM_NETWORK_SERVICES=memif://icmp-responder"}, "wait")
	require.Equal(t, `cmd-nsc wait: NSM_NETWORK_SERVICES: "memif://icmp-responder": mechanism MEMIF is not supported by this client; use kernel://`, line)
}
