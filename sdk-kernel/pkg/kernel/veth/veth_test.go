package veth_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// p2p is what NSM's point-to-point IPAM hands out: one address a side, a route to the other.
func p2p(src, dst string, extra ...*networkservice.Route) *networkservice.IPContext {
	return &networkservice.IPContext{
		SrcIpAddrs: []string{src},
		DstIpAddrs: []string{dst},
		SrcRoutes:  append([]*networkservice.Route{{Prefix: dst}}, extra...),
		DstRoutes:  []*networkservice.Route{{Prefix: src}},
	}
}

// namespaces makes a forwarder's and a workload's namespace and returns a check that both are as
// they were when made.
func namespaces(t *testing.T) (fwd, workload netns.NsHandle, unchanged func()) {
	t.Helper()
	fwd, _ = nstest.New(t)
	workload, _ = nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, workload)}
	return fwd, workload, func() {
		t.Helper()
		require.Equal(t, before[0], nstest.Dump(t, fwd), "the forwarder's namespace is not as before")
		require.Equal(t, before[1], nstest.Dump(t, workload), "the workload's namespace is not as before")
	}
}

func TestCreateDelete(t *testing.T) {
	tests := []struct {
		name string
		spec veth.Spec
	}{
		{name: "ipv4 client", spec: veth.Spec{
			ConnID: "conn-1", Name: "nsm-1", MTU: 1450, Side: ipconfig.Client,
			IP: p2p("172.16.1.1/32", "172.16.1.0/32", &networkservice.Route{Prefix: "10.96.0.0/16"}),
		}},
		{name: "ipv6 endpoint", spec: veth.Spec{
			ConnID: "conn-2", Name: "nsm-2", Side: ipconfig.Endpoint,
			IP: &networkservice.IPContext{
				SrcIpAddrs: []string{"fd00:1::1/64"},
				DstIpAddrs: []string{"fd00:1::2/64"},
				DstRoutes:  []*networkservice.Route{{Prefix: "fd00:99::/48"}},
			},
		}},
		{name: "dual stack ethernet client", spec: veth.Spec{
			ConnID: "conn-3", Name: "nsm-3", Side: ipconfig.Client, Payload: payload.Ethernet,
			Ethernet: &networkservice.EthernetContext{SrcMac: "02:00:00:00:00:01", DstMac: "02:00:00:00:00:02"},
			IP: &networkservice.IPContext{
				SrcIpAddrs:  []string{"10.0.0.1/24", "fd00:2::1/64"},
				DstIpAddrs:  []string{"10.0.0.2/24", "fd00:2::2/64"},
				SrcRoutes:   []*networkservice.Route{{Prefix: "192.168.0.0/16"}, {Prefix: "fd00:3::/64", NextHop: "fd00:2::2"}},
				IpNeighbors: []*networkservice.IpNeighbor{{Ip: "10.0.0.2", HardwareAddress: "02:00:00:00:00:02"}, {Ip: "fd00:2::2", HardwareAddress: "02:00:00:00:00:02"}},
				Policies: []*networkservice.PolicyRoute{
					{From: "10.0.0.1/32", Proto: "tcp", DstPort: "8080", Routes: []*networkservice.Route{{Prefix: "172.20.0.0/16", NextHop: "10.0.0.2"}}},
					{Proto: "17"},
				},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, workload, unchanged := namespaces(t)
			peer, err := veth.Create(fwd, workload, tt.spec)
			require.NoError(t, err)
			require.Equal(t, veth.PeerName(tt.spec.ConnID), peer)
			nstest.Golden(t, "forwarder:\n"+nstest.Dump(t, fwd)+"workload:\n"+nstest.Dump(t, workload))

			if tt.spec.Payload == payload.Ethernet {
				link, err := nstest.Handle(t, workload).LinkByName(tt.spec.Name)
				require.NoError(t, err)
				require.Equal(t, tt.spec.Ethernet.GetSrcMac(), link.Attrs().HardwareAddr.String())
			}

			require.NoError(t, veth.Delete(fwd, workload, tt.spec))
			unchanged()
			require.NoError(t, veth.Delete(fwd, workload, tt.spec), "a second Delete finds nothing and succeeds")
		})
	}
}

func TestCreateFailsCleanly(t *testing.T) {
	tests := []struct {
		name string
		spec veth.Spec
		code codes.Code
		msg  string
	}{
		{
			name: "name too long",
			spec: veth.Spec{ConnID: "c", Name: "nsm-icmp-responder0", IP: p2p("10.0.0.1/32", "10.0.0.0/32")},
			code: codes.InvalidArgument,
			msg:  `veth: interface name "nsm-icmp-responder0" is 19 bytes, limit 15`,
		},
		{
			name: "bad route prefix",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", IP: &networkservice.IPContext{SrcRoutes: []*networkservice.Route{{Prefix: "10.0.0.300/32"}}}},
			code: codes.InvalidArgument,
			msg:  "ipconfig: ip_context.src_routes[0].prefix:",
		},
		{
			name: "next hop of the other family",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", IP: &networkservice.IPContext{SrcRoutes: []*networkservice.Route{{Prefix: "10.1.0.0/16", NextHop: "fd00::1"}}}},
			code: codes.InvalidArgument,
			msg:  "ipconfig: ip_context.src_routes[0]: next hop fd00::1 is not of the family of prefix 10.1.0.0/16",
		},
		{
			name: "multicast MAC",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", Payload: payload.Ethernet, Ethernet: &networkservice.EthernetContext{SrcMac: "01:00:5e:00:00:01"}},
			code: codes.InvalidArgument,
			msg:  `veth: ethernet_context.src_mac "01:00:5e:00:00:01" is not a unicast Ethernet MAC address`,
		},
		{
			// The kernel refuses a next hop that is this side's own address, after the pair and the
			// addresses are made: everything made must go again.
			name: "route the kernel refuses, ipv4",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", Side: ipconfig.Client,
				IP: p2p("10.0.0.1/32", "10.0.0.0/32", &networkservice.Route{Prefix: "10.1.0.0/16", NextHop: "10.0.0.1"})},
			code: codes.InvalidArgument,
			msg:  `ipconfig: add route 10.1.0.0/16 via 10.0.0.1 on "nsm-1"`,
		},
		{
			name: "route the kernel refuses, ipv6",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", Side: ipconfig.Endpoint,
				IP: &networkservice.IPContext{
					SrcIpAddrs: []string{"fd00::1/128"}, DstIpAddrs: []string{"fd00::2/128"},
					DstRoutes: []*networkservice.Route{{Prefix: "fd00:1::/64", NextHop: "fd00::2"}},
				}},
			code: codes.InvalidArgument,
			msg:  `ipconfig: add route fd00:1::/64 via fd00::2 on "nsm-1"`,
		},
		{
			name: "policy table route the kernel refuses",
			spec: veth.Spec{ConnID: "c", Name: "nsm-1", Side: ipconfig.Client,
				IP: &networkservice.IPContext{
					SrcIpAddrs: []string{"10.0.0.1/24"}, DstIpAddrs: []string{"10.0.0.2/24"},
					Policies: []*networkservice.PolicyRoute{{Routes: []*networkservice.Route{{Prefix: "0.0.0.0/0", NextHop: "10.0.0.1"}}}},
				}},
			code: codes.InvalidArgument,
			msg:  "ipconfig: add route 0.0.0.0/0 via 10.0.0.1 table",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, workload, unchanged := namespaces(t)
			_, err := veth.Create(fwd, workload, tt.spec)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tt.msg)
			unchanged()
		})
	}
}

func TestCreateRefusesTakenName(t *testing.T) {
	fwd, _ := nstest.New(t)
	workload, _ := nstest.New(t)
	first := veth.Spec{ConnID: "conn-1", Name: "nsm-1"}
	_, err := veth.Create(fwd, workload, first)
	require.NoError(t, err)
	before := nstest.Dump(t, workload)

	_, err = veth.Create(fwd, workload, veth.Spec{ConnID: "conn-2", Name: "nsm-1"})
	require.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
	require.EqualError(t, err, `veth: interface "nsm-1" already exists in the workload's namespace; pick another name or delete it`)
	_, err = veth.Create(fwd, workload, veth.Spec{ConnID: "conn-1", Name: "nsm-2"})
	require.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
	require.Equal(t, before, nstest.Dump(t, workload))

	require.NoError(t, veth.Delete(fwd, workload, first))
}

// TestDeleteAfterWorkloadGone: when the pod's namespace is gone, Delete cleans the forwarder's side.
func TestDeleteAfterWorkloadGone(t *testing.T) {
	fwd, _ := nstest.New(t)
	workload, _ := nstest.New(t)
	before := nstest.Dump(t, fwd)
	spec := veth.Spec{ConnID: "conn-1", Name: "nsm-1", IP: p2p("10.0.0.1/32", "10.0.0.0/32")}
	_, err := veth.Create(fwd, workload, spec)
	require.NoError(t, err)
	require.NoError(t, veth.Delete(fwd, netns.None(), spec))
	require.Equal(t, before, nstest.Dump(t, fwd))
}

// TestPing runs traffic across a vWire: the workload is the client, the forwarder's namespace
// stands for the endpoint and gets the endpoint's share of the IP context on its end.
func TestPing(t *testing.T) {
	tests := []struct {
		name string
		ip   *networkservice.IPContext
	}{
		{name: "ipv4", ip: p2p("172.16.1.1/32", "172.16.1.0/32")},
		{name: "ipv6", ip: p2p("fd00:16::1/128", "fd00:16::/128")},
		{name: "dual stack /24 and /64", ip: &networkservice.IPContext{
			SrcIpAddrs: []string{"10.1.0.1/24", "fd00:17::1/64"},
			DstIpAddrs: []string{"10.1.0.2/24", "fd00:17::2/64"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			endpoint, _ := nstest.New(t)
			client, _ := nstest.New(t)
			spec := veth.Spec{ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client, IP: tt.ip}
			peer, err := veth.Create(endpoint, client, spec)
			require.NoError(t, err)
			require.NoError(t, ipconfig.Apply(endpoint, peer, ipconfig.Endpoint, tt.ip, spec.ConnID))

			for _, dst := range tt.ip.GetDstIPNets() {
				require.NoError(t, ping.Ping(client, netip.MustParseAddr(dst.IP.String())))
			}
			for _, src := range tt.ip.GetSrcIPNets() {
				require.NoError(t, ping.Ping(endpoint, netip.MustParseAddr(src.IP.String())))
			}
			require.NoError(t, veth.Delete(endpoint, client, spec))
		})
	}
}

// BenchmarkVethSetup creates and deletes a dual-stack vWire: the forwarder's kernel work per
// connection.
func BenchmarkVethSetup(b *testing.B) {
	fwd, _ := nstest.New(b)
	workload, _ := nstest.New(b)
	spec := veth.Spec{ConnID: "bench", Name: "nsm-1", MTU: 1450, IP: &networkservice.IPContext{
		SrcIpAddrs: []string{"172.16.1.1/32", "fd00::1/128"},
		DstIpAddrs: []string{"172.16.1.0/32", "fd00::/128"},
		SrcRoutes:  []*networkservice.Route{{Prefix: "10.96.0.0/16"}},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := veth.Create(fwd, workload, spec); err != nil {
			b.Fatal(err)
		}
		if err := veth.Delete(fwd, workload, spec); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRemoveLeftover: a client restarted in its namespace removes the vWire its previous run
// left under a name it asks for, both ends of it, and leaves an interface of its own alone.
func TestRemoveLeftover(t *testing.T) {
	fwd, workload, unchanged := namespaces(t)
	spec := veth.Spec{ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client, IP: p2p("172.16.1.1/32", "172.16.1.0/32")}
	_, err := veth.Create(fwd, workload, spec)
	require.NoError(t, err)
	link, err := nstest.Handle(t, workload).LinkByName("nsm-1")
	require.NoError(t, err)
	require.Equal(t, veth.Alias("conn-1"), link.Attrs().Alias, "the workload's end says it is a vWire, and whose")

	removed, err := veth.RemoveLeftover(workload, "nsm-1")
	require.NoError(t, err)
	require.True(t, removed)
	unchanged()
	require.NoError(t, veth.Delete(fwd, workload, spec), "the old connection's Close later finds nothing and succeeds")

	removed, err = veth.RemoveLeftover(workload, "nsm-1")
	require.NoError(t, err)
	require.False(t, removed, "nothing of that name")

	h := nstest.Handle(t, workload)
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nsm-1"}, PeerName: "own-1"}))
	removed, err = veth.RemoveLeftover(workload, "nsm-1")
	require.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "is not a vWire")
	require.False(t, removed)
	_, err = h.LinkByName("nsm-1")
	require.NoError(t, err, "the workload's own interface stays")
}

// TestMACIsStableAcrossRecreation: a vWire made again for the same connection has the MAC it had
// (the other side's neighbour cache stays right); another side or connection has another one.
func TestMACIsStableAcrossRecreation(t *testing.T) {
	fwd, workload, _ := namespaces(t)
	mac := func(s veth.Spec) string {
		_, err := veth.Create(fwd, workload, s)
		require.NoError(t, err)
		link, err := nstest.Handle(t, workload).LinkByName(s.Name)
		require.NoError(t, err)
		require.NoError(t, veth.Delete(fwd, workload, s))
		hw := link.Attrs().HardwareAddr
		require.Equal(t, byte(2), hw[0]&3, "locally administered, unicast: %s", hw)
		return hw.String()
	}
	client := veth.Spec{ConnID: "conn-1", Name: "nsm-1", Side: ipconfig.Client}
	first := mac(client)
	require.Equal(t, first, mac(client), "made again, the same MAC")
	endpoint := client
	endpoint.Side = ipconfig.Endpoint
	require.NotEqual(t, first, mac(endpoint))
	other := client
	other.ConnID = "conn-2"
	require.NotEqual(t, first, mac(other))
	ethernet := client
	ethernet.Payload, ethernet.Ethernet = payload.Ethernet, &networkservice.EthernetContext{SrcMac: "02:00:00:00:00:07"}
	require.Equal(t, "02:00:00:00:00:07", mac(ethernet), "the Ethernet context's MAC wins")
}

// TestAdopt makes a vWire as a forwarder's previous run would, then asks Adopt for it as the
// next run would: what matches is kept as it is (the same interfaces, nothing changed), what
// differs is removed (Adopt reports false, and Create can make it anew), and with nothing there
// Adopt reports false and makes nothing.
func TestAdopt(t *testing.T) {
	made := veth.Spec{
		ConnID: "conn-1", Name: "nsm-1", MTU: 1450, Side: ipconfig.Client,
		IP: p2p("172.16.1.1/32", "172.16.1.0/32", &networkservice.Route{Prefix: "10.96.0.0/16"}),
	}
	other := func(change func(*veth.Spec)) veth.Spec {
		s := made
		change(&s)
		return s
	}
	tests := []struct {
		name string
		ask  veth.Spec
		keep bool
	}{
		{"the same", made, true},
		{"another MTU", other(func(s *veth.Spec) { s.MTU = 1400 }), false},
		{"another name", other(func(s *veth.Spec) { s.Name = "nsm-2" }), false},
		{"other addresses", other(func(s *veth.Spec) { s.IP = p2p("172.16.1.3/32", "172.16.1.2/32") }), false},
		{"another payload's MAC", other(func(s *veth.Spec) {
			s.Payload, s.Ethernet = payload.Ethernet, &networkservice.EthernetContext{SrcMac: "02:00:00:00:00:01"}
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, workload, unchanged := namespaces(t)
			_, err := veth.Create(fwd, workload, made)
			require.NoError(t, err)
			before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, workload)}
			end, err := nstest.Handle(t, fwd).LinkByName(veth.PeerName(made.ConnID))
			require.NoError(t, err)

			kept, err := veth.Adopt(fwd, workload, tt.ask)
			require.NoError(t, err)
			require.Equal(t, tt.keep, kept)
			if !tt.keep {
				unchanged() // the vWire that differs is gone, its policy rules too
				_, err := veth.Create(fwd, workload, tt.ask)
				require.NoError(t, err, "and can be made anew")
				require.NoError(t, veth.Delete(fwd, workload, tt.ask))
				return
			}
			require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, workload)}, "kept as it was")
			again, err := nstest.Handle(t, fwd).LinkByName(veth.PeerName(made.ConnID))
			require.NoError(t, err)
			require.Equal(t, end.Attrs().Index, again.Attrs().Index, "the same interface")
			require.NoError(t, veth.Delete(fwd, workload, made))
			unchanged()
		})
	}
	t.Run("nothing there", func(t *testing.T) {
		fwd, workload, unchanged := namespaces(t)
		kept, err := veth.Adopt(fwd, workload, made)
		require.NoError(t, err)
		require.False(t, kept)
		unchanged()
	})
}

// TestWorkloadEndIsNamedWithItsAlias watches the workload's namespace while a vWire is made: the
// interface never shows under the name the client asked for without the alias that marks it as
// a vWire, so a client restarting meanwhile (veth.RemoveLeftover) cannot take it for its own.
func TestWorkloadEndIsNamedWithItsAlias(t *testing.T) {
	fwd, _ := nstest.New(t)
	workload, _ := nstest.New(t)
	updates, done := make(chan netlink.LinkUpdate, 64), make(chan struct{})
	require.NoError(t, netlink.LinkSubscribeAt(workload, updates, done))
	spec := veth.Spec{ConnID: "conn-1", Name: "nsm-1", IP: p2p("10.0.0.1/32", "10.0.0.0/32")}
	_, err := veth.Create(fwd, workload, spec)
	require.NoError(t, err)
	require.NoError(t, veth.Delete(fwd, workload, spec))
	close(done)

	named := 0
	for u := range updates { // closed once the subscription ended
		if u.Attrs().Name == spec.Name {
			named++
			require.Equal(t, veth.Alias(spec.ConnID), u.Attrs().Alias, "an update of %q without its alias (%v)", spec.Name, u.Header.Type)
		}
	}
	require.NotZero(t, named, "the workload's end was seen under its name")
}
