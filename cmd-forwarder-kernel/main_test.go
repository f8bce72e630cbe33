package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk/pkg/networkservice/chains/nsmgr"
	regadapters "vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
)

var (
	bin      string // the command, built once
	nsmgrBin string // cmd-nsmgr and cmd-nsc, for e2e_test.go
	nscBin   string
)

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &bin, "vwire.dev/cmd-nsmgr": &nsmgrBin, "vwire.dev/cmd-nsc": &nscBin})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"tunnel IP that is not one", []string{"NSM_TUNNEL_IP=node-1"}, `NSM_TUNNEL_IP: "node-1": not an IP address; write 10.0.0.1 or fd00::1`},
		{"tunnel IP unspecified", []string{"NSM_TUNNEL_IP=::"}, `NSM_TUNNEL_IP: "::": not a unicast address of an interface`},
		{"tunnel IP of no interface", []string{"NSM_TUNNEL_IP=192.0.2.77"},
			`NSM_TUNNEL_IP: "192.0.2.77": no interface of this network namespace has it; give one of its addresses`},
		{"VXLAN port too high", []string{"NSM_VXLAN_PORT=65536"}, `NSM_VXLAN_PORT: "65536": not a UDP port 1..65535`},
		{"a forwarder service of another name", []string{"NSM_NSNAME=fwd"},
			`NSM_NSNAME: "fwd": nsmgrs find forwarders under the network service forwarder only; leave it unset`},
		{"zero dial timeout", []string{"NSM_DIAL_TIMEOUT=0s"}, `NSM_DIAL_TIMEOUT: "0s": must be positive`},
		{"unknown remote mechanism", []string{"NSM_REMOTE_MECHANISMS=WIREGUARD,KERNEL"},
			`NSM_REMOTE_MECHANISMS: "WIREGUARD,KERNEL": item 2 "KERNEL": not a tunnel this forwarder makes; use WIREGUARD or VXLAN`},
		{"bad label", []string{"NSM_LABELS=p2p"}, `NSM_LABELS: "p2p": not key=value`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := cmdtest.Fails(t, bin, append([]string{"NSM_LOG_LEVEL=ERROR"}, tc.env...))
			require.Equal(t, "cmd-forwarder-kernel: "+tc.want, line)
		})
	}
}

func TestMechanismPriorityOrdersTheTunnels(t *testing.T) {
	for _, tc := range []struct {
		remote, priority, want string
	}{
		{"WIREGUARD,VXLAN", "", "WIREGUARD,VXLAN"},
		{"WIREGUARD,VXLAN", "vxlan", "VXLAN,WIREGUARD"},
		{"WIREGUARD,VXLAN", "KERNEL,VXLAN,MEMIF,WIREGUARD", "VXLAN,WIREGUARD"},
		{"VXLAN", "WIREGUARD,VXLAN", "VXLAN"},
		{"WIREGUARD,VXLAN", "VXLAN,VXLAN", "VXLAN,WIREGUARD"},
	} {
		var r remoteMechanisms
		var p mechanismPriority
		require.NoError(t, r.Decode(tc.remote))
		require.NoError(t, p.Decode(tc.priority))
		require.Equal(t, tc.want, r.ordered(p).String(), "%s ordered by %s", tc.remote, tc.priority)
	}
}

// TestNoNsmgrStopsWithinTheTimeout: with no nsmgr to register with, the forwarder (in a namespace
// of its own: it sweeps the one it runs in) gives up after NSM_REGISTER_TIMEOUT with one line.
func TestNoNsmgrStopsWithinTheTimeout(t *testing.T) {
	name, _ := namespace(t)
	const timeout = 300 * time.Millisecond
	nowhere := "unix://" + filepath.Join(cmdtest.TempDir(t), "nsmgr.sock")
	env := []string{"NSM_LOG_LEVEL=ERROR", "NSM_CONNECT_TO=" + nowhere, "NSM_REGISTER_TIMEOUT=" + timeout.String()}
	line, took := cmdtest.Fails(t, "ip", env, "netns", "exec", name, bin)
	want := fmt.Sprintf("cmd-forwarder-kernel: register at %s: no answer within NSM_REGISTER_TIMEOUT=%s; is the nsmgr or registry running there? (", nowhere, timeout)
	require.True(t, strings.HasPrefix(line, want), "got %s", line)
	require.GreaterOrEqual(t, took, timeout, "it waited for the nsmgr")
	require.Less(t, took, timeout+5*time.Second, "and gave up within the timeout")
}

// namespace makes a named network namespace with lo up and returns its name and a handle,
// removed when the test ends.
func namespace(t *testing.T) (string, netns.NsHandle) {
	if unix.Geteuid() != 0 {
		t.Skip("needs root: the test makes network namespaces")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "vwt-" + hex.EncodeToString(b)
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Close() })
	h := handle(t, ns)
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo))
	return name, ns
}

func handle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func links(t *testing.T, h *netlink.Handle) []string {
	all, err := h.LinkList()
	require.NoError(t, err)
	var names []string
	for _, l := range all {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// forwarders returns the forwarders registered with the nsmgr at cc.
func forwarders(t *testing.T, ctx context.Context, nse regnext.NSE) []*registry.NetworkServiceEndpoint {
	var found []*registry.NetworkServiceEndpoint
	err := nse.Find(ctx, &regnext.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{NetworkServiceNames: []string{"forwarder"}}},
		func(ev *regnext.Event[*registry.NetworkServiceEndpoint]) error {
			found = append(found, ev.Record)
			return nil
		})
	require.NoError(t, err)
	return found
}

// TestStartSweepsRegistersAndStops runs the forwarder in a namespace of its own, with an nsmgr:
// it registers with its labels, removes what a previous run left that no connection adopted
// within NSM_ADOPT_GRACE (and nothing else), and at SIGTERM unregisters and exits 0.
func TestStartSweepsRegistersAndStops(t *testing.T) {
	name, ns := namespace(t)
	h := handle(t, ns)
	left := ifname.Name("old-connection", ifname.Client)
	for _, pair := range [][2]string{{left, "eth-left"}, {"keep0", "keep1"}} {
		require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}))
	}
	keep0, err := h.LinkByName("keep0")
	require.NoError(t, err)
	addr, err := netlink.ParseAddr("10.99.0.1/24")
	require.NoError(t, err)
	require.NoError(t, h.AddrAdd(keep0, addr))
	rule := netlink.NewRule()
	rule.IifName, rule.Table, rule.Priority = left, 1234, 1000
	require.NoError(t, h.RuleAdd(rule))

	dir := cmdtest.TempDir(t)
	nsmgrURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nsmgr.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	mgr := nsmgr.NewServer(ctx, cmdtest.Tokens(t, "nsmgr", time.Minute), nsmgr.WithName("nsmgr"), nsmgr.WithURL(nsmgrURL))
	errs, err := grpcserve.Serve(ctx, nsmgrURL, mgr, cmdtest.ServerOptions(t, "nsmgr")...)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range errs {
		}
	})
	cc := cmdtest.Dial(t, nsmgrURL.String())
	registered := regadapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cc))

	fwdURL := "unix://" + filepath.Join(dir, "fwd.sock")
	p := cmdtest.Start(t, "ip", []string{ // with NSM's variables, as NSM's forwarder manifests set them
		"NSM_LOG_LEVEL=DEBUG", "NSM_NAME=fwd-1", "NSM_CONNECT_TO=" + nsmgrURL.String(), "NSM_LISTEN_ON=" + fwdURL,
		"NSM_TUNNEL_IP=10.99.0.1", "NSM_LABELS=p2p:true,node:n1", "NSM_NSNAME=forwarder", "NSM_VXLAN_PORT=0",
		"NSM_DIAL_TIMEOUT=750ms", "NSM_MECHANISM_PRIORITY=VXLAN", "NSM_PPROF_ENABLED=true", "NSM_ADOPT_GRACE=200ms",
	}, "netns", "exec", name, bin)
	p.WaitStderr(`msg=registered`)
	p.WaitStderr(`removed interfaces a previous run left that no connection adopted`)
	for _, v := range []string{"NSM_PPROF_ENABLED"} {
		require.Contains(t, p.Stderr(), `msg="accepted, not used yet" cmd=cmd-forwarder-kernel variable=`+v+" why=")
	}
	require.Contains(t, p.Stderr(), "NSM_VXLAN_PORT=4789", "0 is the standard port")
	require.Contains(t, p.Stderr(), "interfaces a previous run left wait to be adopted")
	require.NotContains(t, links(t, h), left, "the leftover is gone")
	require.NotContains(t, links(t, h), "eth-left", "with its peer")
	require.Contains(t, links(t, h), "keep0", "other interfaces stay")
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	require.NoError(t, err)
	for _, r := range rules {
		require.NotEqual(t, left, r.IifName, "the leftover's rule is gone")
	}

	found := forwarders(t, ctx, registered)
	require.Len(t, found, 1)
	require.Equal(t, "fwd-1", found[0].GetName())
	fwdSocket, err := fdpass.PathURL(strings.TrimPrefix(fwdURL, "unix://"))
	require.NoError(t, err)
	require.Equal(t, fwdSocket, found[0].GetUrl(), "the forwarder passed its socket: the nsmgr dials it through the descriptor")
	require.Equal(t, map[string]string{"p2p": "true", "node": "n1"}, found[0].GetNetworkServiceLabels()["forwarder"].GetLabels())

	require.Equal(t, 0, p.Stop(), "stderr:\n%s", p.Stderr())
	require.Empty(t, forwarders(t, ctx, registered), "it unregistered")
	require.True(t, strings.Contains(p.Stderr(), "msg=stopped"), "stderr:\n%s", p.Stderr())
}

// TestRegistersAgainAfterTheNsmgrRestarts: an nsmgr that restarted has forgotten the forwarder;
// the forwarder registers again as soon as it answers, without waiting for a refresh.
func TestRegistersAgainAfterTheNsmgrRestarts(t *testing.T) {
	name, _ := namespace(t)
	dir := cmdtest.TempDir(t)
	nsmgrURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nsmgr.sock")}
	startNsmgr := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		mgr := nsmgr.NewServer(ctx, cmdtest.Tokens(t, "nsmgr", time.Minute), nsmgr.WithName("nsmgr"), nsmgr.WithURL(nsmgrURL))
		errs, err := grpcserve.Serve(ctx, nsmgrURL, mgr, cmdtest.ServerOptions(t, "nsmgr")...)
		require.NoError(t, err)
		return func() {
			cancel()
			for range errs {
			}
		}
	}
	stop := startNsmgr()
	p := cmdtest.Start(t, "ip", []string{"NSM_LOG_LEVEL=DEBUG", "NSM_NAME=fwd-1", "NSM_CONNECT_TO=" + nsmgrURL.String(),
		"NSM_LISTEN_ON=unix://" + filepath.Join(dir, "fwd.sock")}, "netns", "exec", name, bin)
	p.WaitStderr(`msg=registered`)
	stop()
	t.Cleanup(startNsmgr())

	ctx := context.Background()
	registered := regadapters.NSEClient(registry.NewNetworkServiceEndpointRegistryClient(cmdtest.Dial(t, nsmgrURL.String())))
	require.Eventually(t, func() bool { return len(forwarders(t, ctx, registered)) == 1 }, 10*time.Second, 10*time.Millisecond,
		"registered again at the restarted nsmgr; stderr:\n%s", p.Stderr())
	require.Equal(t, 0, p.Stop(), "stderr:\n%s", p.Stderr())
	require.Empty(t, forwarders(t, ctx, registered), "it unregistered")
}
