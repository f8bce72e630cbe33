package l3xconnect_test

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/l3xconnect"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup makes a forwarder's namespace with lo up and a TUN device tun0, a workload's namespace,
// and the vWire of spec between them with fixed MACs (forwarder's end 02:00:00:00:00:f1,
// workload's 02:00:00:00:00:01), and returns the Veth to join.
func setup(t *testing.T, spec veth.Spec) (fwd netns.NsHandle, v l3xconnect.Veth) {
	fwd, _ = nstest.New(t)
	workload, _ := nstest.New(t)
	hf, hw := nstest.Handle(t, fwd), nstest.Handle(t, workload)
	lo, err := hf.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, hf.LinkSetUp(lo))
	require.NoError(t, nsfile.Do(fwd, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, Mode: netlink.TUNTAP_MODE_TUN})
	}))
	tun, err := hf.LinkByName("tun0")
	require.NoError(t, err)
	require.NoError(t, hf.LinkSetUp(tun))
	peer, err := veth.Create(fwd, workload, spec)
	require.NoError(t, err)
	for _, end := range []struct {
		h    *netlink.Handle
		name string
		mac  string
	}{{hf, peer, "02:00:00:00:00:f1"}, {hw, spec.Name, "02:00:00:00:00:01"}} {
		link, err := end.h.LinkByName(end.name)
		require.NoError(t, err)
		mac, _ := net.ParseMAC(end.mac)
		require.NoError(t, end.h.LinkSetHardwareAddr(link, mac))
	}
	return fwd, l3xconnect.Veth{Name: peer, Workload: workload, WorkloadName: spec.Name, Side: spec.Side, IP: spec.IP}
}

func sysctl(t *testing.T, ns netns.NsHandle, key string) string {
	var value []byte
	require.NoError(t, nsfile.Do(ns, func() (err error) {
		value, err = os.ReadFile("/proc/sys/" + key)
		return err
	}))
	return strings.TrimSpace(string(value))
}

func TestCreateDelete(t *testing.T) {
	tests := []struct {
		name string
		spec veth.Spec
	}{
		{name: "dual stack client", spec: veth.Spec{
			ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client,
			IP: &networkservice.IPContext{
				SrcIpAddrs: []string{"172.16.0.1/32", "fd16::1/128"},
				DstIpAddrs: []string{"172.16.0.0/32", "fd16::/128"},
				SrcRoutes:  []*networkservice.Route{{Prefix: "10.96.0.0/16", NextHop: "172.16.0.254"}},
				DstRoutes:  []*networkservice.Route{{Prefix: "172.16.0.1/32"}, {Prefix: "fd16::1/128"}},
			},
		}},
		{name: "ipv4 endpoint", spec: veth.Spec{
			ConnID: "conn-2", Name: "nsm-2", Side: ipconfig.Endpoint,
			IP: &networkservice.IPContext{
				SrcIpAddrs: []string{"172.16.0.1/32"},
				DstIpAddrs: []string{"172.16.0.0/32"},
				SrcRoutes:  []*networkservice.Route{{Prefix: "172.16.0.0/32"}},
				DstRoutes:  []*networkservice.Route{{Prefix: "172.16.0.1/32"}},
			},
		}},
		{name: "ipv6 client", spec: veth.Spec{
			ConnID: "conn-3", Name: "nsm-3", Side: ipconfig.Client,
			IP: &networkservice.IPContext{
				SrcIpAddrs: []string{"fd16::1/128"},
				DstIpAddrs: []string{"fd16::/128"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, v := setup(t, tt.spec)
			before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}

			require.NoError(t, l3xconnect.Create(fwd, v, "tun0", tt.spec.ConnID))
			nstest.Golden(t, "forwarder:\n"+nstest.Dump(t, fwd)+"workload:\n"+nstest.Dump(t, v.Workload))
			require.Equal(t, "1", sysctl(t, fwd, "net/ipv4/ip_forward"))
			require.Equal(t, "1", sysctl(t, fwd, "net/ipv6/conf/all/forwarding"))
			require.Equal(t, "0", sysctl(t, fwd, "net/ipv4/conf/"+v.Name+"/rp_filter"))

			require.NoError(t, l3xconnect.Delete(fwd, v.Name, "tun0", tt.spec.ConnID))
			after := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}
			// The neighbours go with the interfaces, not with Delete: the forwarder deletes those next.
			after[0], after[1] = withoutNeighbours(after[0]), withoutNeighbours(after[1])
			require.Equal(t, [2]string{withoutNeighbours(before[0]), withoutNeighbours(before[1])}, after, "rules and routes are gone")
			require.NoError(t, l3xconnect.Delete(fwd, v.Name, "tun0", tt.spec.ConnID), "Delete again is a no-op")
		})
	}
}

// withoutNeighbours drops the neighbours section of a dump.
func withoutNeighbours(dump string) string {
	before, rest, _ := strings.Cut(dump, "neighbours:\n")
	_, after, _ := strings.Cut(rest, "tc:\n")
	return before + "tc:\n" + after
}

func TestCreateFailsCleanly(t *testing.T) {
	spec := veth.Spec{
		ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client,
		IP: &networkservice.IPContext{SrcIpAddrs: []string{"172.16.0.1/32", "fd16::1/128"}, DstIpAddrs: []string{"172.16.0.0/32", "fd16::/128"}},
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, fwd netns.NsHandle, v *l3xconnect.Veth) (l3 string)
		code    codes.Code
	}{
		{"no address", func(_ *testing.T, _ netns.NsHandle, v *l3xconnect.Veth) string {
			v.IP = &networkservice.IPContext{DstIpAddrs: []string{"172.16.0.0/32"}}
			return "tun0"
		}, codes.FailedPrecondition},
		{"bad IP context", func(_ *testing.T, _ netns.NsHandle, v *l3xconnect.Veth) string {
			v.IP = &networkservice.IPContext{SrcIpAddrs: []string{"172.16.0.1"}}
			return "tun0"
		}, codes.InvalidArgument},
		{"no tunnel interface", func(*testing.T, netns.NsHandle, *l3xconnect.Veth) string { return "tun9" }, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, v := setup(t, spec)
			l3 := tt.prepare(t, fwd, &v)
			before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}
			err := l3xconnect.Create(fwd, v, l3, "conn-1")
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}, "nothing is left")
		})
	}
}

// TestCreateKeepsWhatAPreviousRunMade: a restarted forwarder whose vWire was adopted routes it
// again; the rule and the table's route that its previous run made are kept, and the join is
// the one a first Create makes.
func TestCreateKeepsWhatAPreviousRunMade(t *testing.T) {
	spec := veth.Spec{
		ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client,
		IP: &networkservice.IPContext{SrcIpAddrs: []string{"172.16.0.1/32", "fd16::1/128"}, DstIpAddrs: []string{"172.16.0.0/32", "fd16::/128"}},
	}
	fwd, v := setup(t, spec)
	require.NoError(t, l3xconnect.Create(fwd, v, "tun0", "conn-1"))
	made := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}
	require.NoError(t, l3xconnect.Create(fwd, v, "tun0", "conn-1"), "a second run finds the first's rules and routes")
	require.Equal(t, made, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, v.Workload)}, "and keeps them as they are")
	require.NoError(t, l3xconnect.Delete(fwd, v.Name, "tun0", "conn-1"))
}
