package vxlan_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk-kernel/pkg/kernel/vxlan"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCreateDelete(t *testing.T) {
	tests := []struct {
		name string
		cfg  vxlan.Config
	}{
		{name: "ipv4 default port", cfg: vxlan.Config{
			Name: "vx-100", VNI: 100, Local: netip.MustParseAddr("10.254.0.1"), Remote: netip.MustParseAddr("10.254.0.2"),
		}},
		{name: "ipv6 port 8472 mtu 1400", cfg: vxlan.Config{
			Name: "vx-16777215", VNI: 1<<24 - 1, Local: netip.MustParseAddr("fd00:254::1"), Remote: netip.MustParseAddr("fd00:254::2"),
			Port: 8472, MTU: 1400,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, _ := nstest.New(t)
			before := nstest.Dump(t, ns)
			require.NoError(t, vxlan.Create(ns, tt.cfg))
			nstest.Golden(t, nstest.Dump(t, ns))
			require.NoError(t, vxlan.Delete(ns, tt.cfg.Name))
			require.Equal(t, before, nstest.Dump(t, ns))
			require.NoError(t, vxlan.Delete(ns, tt.cfg.Name), "deleting what is gone succeeds")
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	ns, _ := nstest.New(t)
	other, _ := nstest.New(t)
	nstest.Veth(t, ns, "ul0", nil, other, "ul0", nil)
	local, remote := netip.MustParseAddr("10.254.0.1"), netip.MustParseAddr("10.254.0.2")
	require.NoError(t, vxlan.Create(ns, vxlan.Config{Name: "vx-1", VNI: 1, Local: local, Remote: remote}))
	before := nstest.Dump(t, ns)

	tests := []struct {
		name string
		cfg  vxlan.Config
		code codes.Code
		msg  string
	}{
		{name: "VNI 0", cfg: vxlan.Config{Name: "vx-2", Local: local, Remote: remote},
			code: codes.InvalidArgument, msg: "vxlan: VNI 0 is outside 1..16777215"},
		{name: "VNI over 24 bits", cfg: vxlan.Config{Name: "vx-2", VNI: 1 << 24, Local: local, Remote: remote},
			code: codes.InvalidArgument, msg: "vxlan: VNI 16777216 is outside 1..16777215"},
		{name: "no local address", cfg: vxlan.Config{Name: "vx-2", VNI: 2, Remote: remote},
			code: codes.InvalidArgument, msg: "vxlan: no local address; both underlay addresses are needed"},
		{name: "multicast remote", cfg: vxlan.Config{Name: "vx-2", VNI: 2, Local: local, Remote: netip.MustParseAddr("239.1.1.1")},
			code: codes.InvalidArgument, msg: `vxlan: remote address "239.1.1.1" is not a unicast IP address`},
		{name: "mixed families", cfg: vxlan.Config{Name: "vx-2", VNI: 2, Local: local, Remote: netip.MustParseAddr("fd00::2")},
			code: codes.InvalidArgument, msg: "vxlan: local address 10.254.0.1 and remote address fd00::2 are of different families"},
		{name: "name too long", cfg: vxlan.Config{Name: "vxlan-conn-12345", VNI: 2, Local: local, Remote: remote},
			code: codes.InvalidArgument, msg: `vxlan: interface name "vxlan-conn-12345" is 16 bytes, limit 15`},
		{name: "name taken", cfg: vxlan.Config{Name: "vx-1", VNI: 2, Local: local, Remote: remote},
			code: codes.AlreadyExists, msg: `vxlan: interface "vx-1" already exists; delete it or pick another name`},
		{name: "VNI and port taken", cfg: vxlan.Config{Name: "vx-2", VNI: 1, Local: local, Remote: remote},
			code: codes.AlreadyExists, msg: `vxlan: add "vx-2" (VNI 1, 10.254.0.1 -> 10.254.0.2 port 4789): file exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := vxlan.Create(ns, tt.cfg)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.EqualError(t, err, tt.msg)
			require.Equal(t, before, nstest.Dump(t, ns))
		})
	}

	err := vxlan.Delete(ns, "ul0")
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.EqualError(t, err, `vxlan: "ul0" is a veth device, not VXLAN; not deleting it`)
	require.NoError(t, vxlan.Delete(ns, "vx-1"))
}

// TestTunnel joins two namespaces by a veth underlay and pings across VXLAN devices on it.
func TestTunnel(t *testing.T) {
	overlay := &networkservice.IPContext{
		SrcIpAddrs: []string{"192.168.100.1/24", "fd00:100::1/64"},
		DstIpAddrs: []string{"192.168.100.2/24", "fd00:100::2/64"},
	}
	tests := []struct {
		name     string
		underlay [2]netip.Prefix
	}{
		{name: "ipv4 underlay", underlay: [2]netip.Prefix{netip.MustParsePrefix("10.254.0.1/24"), netip.MustParsePrefix("10.254.0.2/24")}},
		{name: "ipv6 underlay", underlay: [2]netip.Prefix{netip.MustParsePrefix("fd00:254::1/64"), netip.MustParsePrefix("fd00:254::2/64")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := nstest.New(t)
			b, _ := nstest.New(t)
			nstest.Veth(t, a, "ul0", []string{tt.underlay[0].String()}, b, "ul0", []string{tt.underlay[1].String()})
			sides := [2]ipconfig.Side{ipconfig.Client, ipconfig.Endpoint}
			for i, ns := range [2]netns.NsHandle{a, b} {
				cfg := vxlan.Config{Name: "vx-42", VNI: 42, Local: tt.underlay[i].Addr(), Remote: tt.underlay[1-i].Addr()}
				require.NoError(t, vxlan.Create(ns, cfg))
				require.NoError(t, ipconfig.Apply(ns, cfg.Name, sides[i], overlay, "vx"))
			}
			for _, dst := range []string{"192.168.100.2", "fd00:100::2"} {
				require.NoError(t, ping.Ping(a, netip.MustParseAddr(dst)))
			}
			for _, dst := range []string{"192.168.100.1", "fd00:100::1"} {
				require.NoError(t, ping.Ping(b, netip.MustParseAddr(dst)))
			}
		})
	}
}

// TestAdopt: Adopt keeps a device that is what the config asks for, and leaves one that differs
// for the caller to replace, changing nothing either way.
func TestAdopt(t *testing.T) {
	ns, _ := nstest.New(t)
	cfg := vxlan.Config{Name: "vx0", VNI: 42, Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.2"), MTU: 1400}
	kept, err := vxlan.Adopt(ns, cfg)
	require.NoError(t, err)
	require.False(t, kept, "no device yet")
	require.Zero(t, vxlan.VNI(ns, cfg.Name))
	require.NoError(t, vxlan.Create(ns, cfg))
	made := nstest.Dump(t, ns)
	require.Equal(t, uint32(42), vxlan.VNI(ns, cfg.Name))
	for _, tt := range []struct {
		name   string
		change func(*vxlan.Config)
		keep   bool
	}{
		{"the same", func(*vxlan.Config) {}, true},
		{"another VNI", func(c *vxlan.Config) { c.VNI = 43 }, false},
		{"another remote", func(c *vxlan.Config) { c.Remote = netip.MustParseAddr("10.0.0.3") }, false},
		{"another port", func(c *vxlan.Config) { c.Port = 4790 }, false},
		{"another MTU", func(c *vxlan.Config) { c.MTU = 1300 }, false},
	} {
		ask := cfg
		tt.change(&ask)
		kept, err := vxlan.Adopt(ns, ask)
		require.NoError(t, err)
		require.Equal(t, tt.keep, kept, tt.name)
		require.Equal(t, made, nstest.Dump(t, ns), "%s: Adopt touches nothing", tt.name)
	}
	require.NoError(t, vxlan.Delete(ns, cfg.Name))
}
