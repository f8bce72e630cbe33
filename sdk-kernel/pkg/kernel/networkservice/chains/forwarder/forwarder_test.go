package forwarder_test

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsclient "vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	kernelmech "vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/sandbox"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/chains/forwarder"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "icmp-responder"

// node is one sandbox node whose forwarder is ours, working in a namespace of its own.
type node struct {
	*sandbox.Node
	ns    netns.NsHandle
	url   *url.URL           // where its forwarder serves
	opts  []forwarder.Option // its forwarder's options
	crash func()             // stops its forwarder as a crash would
	// successors counts the forwarders started after the first on the node; each is named
	// anew, as a new pod of a DaemonSet is.
	successors int
}

// mesh builds a sandbox of n nodes and replaces each node's pass-through forwarder with the
// kernel forwarder in a new namespace; underlay, if set, joins node i's namespace to node 0's
// with a veth and gives it underlay[i] (the tunnel address).
func mesh(t *testing.T, n int, underlay []netip.Prefix, sandboxOpts []sandbox.Option, opts ...forwarder.Option) (*sandbox.Domain, []*node) {
	d := sandbox.New(t, n, sandboxOpts...)
	var nodes []*node
	for i, sn := range d.Nodes {
		nodes = append(nodes, newNode(t, sn))
		if i > 0 && underlay != nil {
			nstest.Veth(t, nodes[0].ns, "ul"+string(rune('0'+i)), []string{underlay[0].String()}, nodes[i].ns, "ul0", []string{underlay[i].String()})
		}
	}
	for i, nd := range nodes {
		var all []forwarder.Option
		if underlay != nil {
			all = append(all, forwarder.WithTunnelIP(underlay[i].Addr()))
		}
		nd.url, _ = serveForwarder(t, d, nd, append(all, opts...))
	}
	return d, nodes
}

// newNode stops the pass-through forwarders of sn and gives it a new namespace for ours.
func newNode(t *testing.T, sn *sandbox.Node) *node {
	for _, f := range sn.Forwarders {
		f.Stop()
	}
	ns, _ := nstest.New(t)
	h := nstest.Handle(t, ns)
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo), "a forwarder's namespace has lo up (l3xconnect sets it up otherwise)")
	return &node{Node: sn, ns: ns}
}

// serveForwarder serves the kernel forwarder of nd and registers it with nd's nsmgr, until the
// test ends. It returns the forwarder's URL and its connection to the nsmgr's registry services.
func serveForwarder(t *testing.T, d *sandbox.Domain, nd *node, opts []forwarder.Option) (*url.URL, *registryConn) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	self := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "fwd.sock")}
	reg, crash := startForwarder(t, d, nd, self, opts)
	nd.opts, nd.crash = opts, crash
	return self, reg
}

// startForwarder serves the kernel forwarder of nd at self and registers it with nd's nsmgr.
// It returns its connection to the nsmgr's registry services and a function that stops it as a
// crash would: it stops serving, with nothing closed or unregistered, its kernel objects left
// as they are (the test's end stops it otherwise).
func startForwarder(t *testing.T, d *sandbox.Domain, nd *node, self *url.URL, opts []forwarder.Option) (*registryConn, func()) {
	ctx, cancel := context.WithCancel(d.Context())
	name := nd.Name + "-kernel-fwd"
	if nd.successors > 0 {
		name = fmt.Sprintf("%s-%d", name, nd.successors)
	}
	id := d.NewIdentity(name)
	cc, err := regclient.Dial(nd.NSMgr.URL, id.RegistryDialOptions()...)
	require.NoError(t, err)
	reg := &registryConn{ClientConn: cc, finds: map[string]int{}, taken: map[string][]bool{}}
	std := []forwarder.Option{forwarder.WithName(name), forwarder.WithDialOptions(dial.WithDialOptions(id.DialOptions()...))}
	if id.Source != nil {
		std = append(std, forwarder.WithAuthorizeOptions(authorize.WithIdentity(id.Source)))
	}
	fwd, err := forwarder.NewServer(ctx, id.Tokens, reg, nd.ns, append(std, opts...)...)
	require.NoError(t, err)
	errs, err := grpcserve.Serve(ctx, self, fwd, id.ServerOptions()...)
	require.NoError(t, err)
	_, unregister, err := regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  []string{"forwarder"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"forwarder": {Labels: map[string]string{"p2p": "true"}}},
		Url:                  self.String(),
	})
	require.NoError(t, err)
	var once sync.Once
	crash := func() {
		once.Do(func() {
			cancel()
			for range errs {
			}
			_ = cc.Close()
		})
	}
	t.Cleanup(func() {
		_ = unregister(context.WithoutCancel(ctx))
		crash()
	})
	return reg, crash
}

// workloads starts an endpoint on nse's node in a new namespace and returns it and a new
// namespace for the client, with the namespaces' state before any connection.
func workloads(t *testing.T, d *sandbox.Domain, nseNode *node, p string, extra ...networkservice.NetworkServiceServer) (nsc, nse netns.NsHandle, nscURL string) {
	d.RegisterService(&registry.NetworkService{Name: service, Payload: p})
	nse, nseName := nstest.New(t)
	nseNode.NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{service}}, append([]networkservice.NetworkServiceServer{
		sendfd.NewServer(), // the endpoint's namespace goes to the forwarder as a descriptor
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(kernelmech.WithNetNSURL(nstest.URL(nseName)))}),
	}, extra...)...)
	nsc, nscName := nstest.New(t)
	return nsc, nse, nstest.URL(nscName)
}

func request(nscURL string) *networkservice.NetworkServiceRequest {
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetInterfaceName("nsm-1")
	mech.SetNetNSURL(nscURL)
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: service},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	}
}

// pingAcross pings every address of the other side from each side.
func pingAcross(t *testing.T, nsc, nse netns.NsHandle, conn *networkservice.Connection) {
	t.Helper()
	ipc := conn.GetContext().GetIpContext()
	require.Len(t, ipc.GetDstIpAddrs(), 2, "an IPv4 and an IPv6 address each")
	for _, side := range []struct {
		from netns.NsHandle
		to   []string
	}{{nsc, ipc.GetDstIpAddrs()}, {nse, ipc.GetSrcIpAddrs()}} {
		for _, dst := range side.to {
			require.NoError(t, ping.Ping(side.from, netip.MustParsePrefix(dst).Addr()), "ping %s", dst)
		}
	}
}

// tunnelType is the kind of the forwarder's tunnel device in ns ("" without one).
func tunnelType(t *testing.T, ns netns.NsHandle) string {
	links, err := nstest.Handle(t, ns).LinkList()
	require.NoError(t, err)
	for _, l := range links {
		if !ifname.Ours(l.Attrs().Name) {
			continue
		}
		switch l.(type) {
		case *netlink.Vxlan:
			return vxlan.MECHANISM
		case *netlink.Tuntap, *netlink.GenericLink:
			if l.Type() == "tuntap" || l.Type() == "tun" {
				return wireguard.MECHANISM
			}
		}
	}
	return ""
}

func TestKernel2Kernel(t *testing.T) {
	for _, p := range []string{payload.IP, payload.Ethernet} {
		t.Run(p, func(t *testing.T) {
			d, nodes := mesh(t, 1, nil, nil)
			nsc, nse, nscURL := workloads(t, d, nodes[0], p)
			before := [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}

			ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
			defer cancel()
			client := nodes[0].NewClient("nsc")
			conn, err := client.Request(ctx, request(nscURL))
			require.NoError(t, err)
			require.Equal(t, kernel.MECHANISM, conn.GetMechanism().GetType())
			pingAcross(t, nsc, nse, conn)

			_, err = client.Close(ctx, conn)
			require.NoError(t, err)
			require.Equal(t, before, [3]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}, "nothing is left")
		})
	}
}

func TestKernel2Tunnel2Kernel(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("10.254.0.1/24"), netip.MustParsePrefix("10.254.0.2/24")}
	v6 := []netip.Prefix{netip.MustParsePrefix("fd00:254::1/64"), netip.MustParsePrefix("fd00:254::2/64")}
	tests := []struct {
		name     string
		payload  string
		underlay []netip.Prefix
		remote   []string // forwarder.WithRemoteMechanisms; nil: the default
		want     string
	}{
		{"wireguard/ipv4 underlay", payload.IP, v4, nil, wireguard.MECHANISM},
		{"wireguard/ipv6 underlay", payload.IP, v6, nil, wireguard.MECHANISM},
		{"vxlan/ethernet/ipv4 underlay", payload.Ethernet, v4, nil, vxlan.MECHANISM},
		{"vxlan/ethernet/ipv6 underlay", payload.Ethernet, v6, nil, vxlan.MECHANISM},
		{"vxlan/ip/ipv4 underlay", payload.IP, v4, []string{vxlan.MECHANISM}, vxlan.MECHANISM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []forwarder.Option
			if tt.remote != nil {
				opts = append(opts, forwarder.WithRemoteMechanisms(tt.remote...))
			}
			d, nodes := mesh(t, 2, tt.underlay, nil, opts...)
			nsc, nse, nscURL := workloads(t, d, nodes[1], tt.payload)
			before := [4]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nodes[1].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}

			ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
			defer cancel()
			client := nodes[0].NewClient("nsc")
			conn, err := client.Request(ctx, request(nscURL))
			require.NoError(t, err)
			require.Equal(t, kernel.MECHANISM, conn.GetMechanism().GetType())
			require.Equal(t, tt.want, tunnelType(t, nodes[0].ns), "the client's node tunnels with %s", tt.want)
			require.Equal(t, tt.want, tunnelType(t, nodes[1].ns), "the endpoint's node tunnels with %s", tt.want)
			pingAcross(t, nsc, nse, conn)

			_, err = client.Close(ctx, conn)
			require.NoError(t, err)
			require.Equal(t, before, [4]string{nstest.Dump(t, nodes[0].ns), nstest.Dump(t, nodes[1].ns), nstest.Dump(t, nsc), nstest.Dump(t, nse)}, "nothing is left")
		})
	}
}

// TestRefreshKeepsTheVWire refreshes a connection twice, as the client's refresh element does
// (the same request with the connection as returned): every element keeps what it made, and the
// vWire still carries traffic. Refresh timing itself is tested in the sdk.
func TestRefreshKeepsTheVWire(t *testing.T) {
	underlay := []netip.Prefix{netip.MustParsePrefix("10.254.0.1/24"), netip.MustParsePrefix("10.254.0.2/24")}
	tests := []struct {
		name   string
		nodes  int
		remote []string
	}{
		{"kernel", 1, nil},
		{"wireguard", 2, []string{wireguard.MECHANISM}},
		{"vxlan", 2, []string{vxlan.MECHANISM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ul []netip.Prefix
			var opts []forwarder.Option
			if tt.nodes > 1 {
				ul, opts = underlay, []forwarder.Option{forwarder.WithRemoteMechanisms(tt.remote...)}
			}
			d, nodes := mesh(t, tt.nodes, ul, nil, opts...)
			rec := checks.NewServer()
			nsc, nse, nscURL := workloads(t, d, nodes[tt.nodes-1], payload.IP, rec)
			ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
			defer cancel()
			client := nodes[0].NewClient("nsc")
			conn, err := client.Request(ctx, request(nscURL))
			require.NoError(t, err)
			during := nstest.Dump(t, nodes[0].ns)

			for range 2 {
				refresh := request(nscURL)
				refresh.Connection = conn.Clone()
				conn, err = client.Request(ctx, refresh)
				require.NoError(t, err)
			}
			require.GreaterOrEqual(t, len(rec.Requests()), 3, "the endpoint was refreshed, at least twice")
			require.Equal(t, during, nstest.Dump(t, nodes[0].ns), "the refreshes kept the forwarder's interfaces as they were")
			pingAcross(t, nsc, nse, conn)
			_, err = client.Close(ctx, conn)
			require.NoError(t, err)
		})
	}
}

// registryConn is a forwarder's connection to its nsmgr's registry services. It counts the
// Finds without watch that go to the registry, by service name and by endpoint name, and the
// events of endpoint watches that the forwarder has taken in (it asked for the next one).
type registryConn struct {
	*grpc.ClientConn
	mu    sync.Mutex
	finds map[string]int    // by "service/<name>" or "endpoint/<name>"
	taken map[string][]bool // Deleted of each endpoint event taken in, by endpoint name
}

func (c *registryConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := c.ClientConn.NewStream(ctx, desc, method, opts...)
	if err != nil || (method != "/registry.NetworkServiceEndpointRegistry/Find" && method != "/registry.NetworkServiceRegistry/Find") {
		return s, err
	}
	return &findStream{ClientStream: s, c: c}, nil
}

// found is how many Finds without watch for the endpoint name went to the registry.
func (c *registryConn) found(name string) int { return c.count("endpoint/" + name) }

// foundService is how many Finds without watch for the service name went to the registry.
func (c *registryConn) foundService(name string) int { return c.count("service/" + name) }

func (c *registryConn) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finds[key]
}

// tookIn reports whether the last event of the endpoint name that the forwarder took in from a
// watch said it is there (deleted false) or gone (deleted true).
func (c *registryConn) tookIn(name string, deleted bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	events := c.taken[name]
	return len(events) > 0 && events[len(events)-1] == deleted
}

// findStream is one endpoint Find over a registryConn.
type findStream struct {
	grpc.ClientStream
	c     *registryConn
	watch bool
	last  *registry.NetworkServiceEndpointResponse // received, and being taken in
}

func (s *findStream) SendMsg(m any) error {
	key := ""
	switch q := m.(type) {
	case *registry.NetworkServiceEndpointQuery:
		s.watch, key = q.GetWatch(), "endpoint/"+q.GetNetworkServiceEndpoint().GetName()
	case *registry.NetworkServiceQuery:
		s.watch, key = q.GetWatch(), "service/"+q.GetNetworkService().GetName()
	}
	if key != "" && !s.watch {
		s.c.mu.Lock()
		s.c.finds[key]++
		s.c.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

func (s *findStream) RecvMsg(m any) error {
	if s.watch && s.last != nil { // the watch's reader is done with the last event
		name := s.last.GetNetworkServiceEndpoint().GetName()
		s.c.mu.Lock()
		s.c.taken[name] = append(s.c.taken[name], s.last.GetDeleted())
		s.c.mu.Unlock()
	}
	s.last = nil
	err := s.ClientStream.RecvMsg(m)
	if resp, ok := m.(*registry.NetworkServiceEndpointResponse); ok && err == nil {
		s.last = resp
	}
	return err
}

// TestEndpointLookupsAreCached: the forwarder asks the registry (through its nsmgr) for the
// endpoint a Request names once; later Requests and Closes for it are answered from the
// forwarder's cache, which a watch keeps current, so that an endpoint that unregistered is no
// longer found. The client calls the forwarder directly, naming the endpoint, as an nsmgr does.
func TestEndpointLookupsAreCached(t *testing.T) {
	d := sandbox.New(t, 1)
	nd := newNode(t, d.Nodes[0])
	fwdURL, reg := serveForwarder(t, d, nd, nil)
	_, _, nscURL := workloads(t, d, nd, payload.IP)
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	direct := nd.NewClient("nsc", nsclient.WithClientURL(fwdURL), nsclient.WithoutRetry(), nsclient.WithoutHeal())
	req := request(nscURL)
	req.Connection.NetworkServiceEndpointName = "nse"

	conn, err := direct.Request(ctx, req.Clone())
	require.NoError(t, err)
	require.Equal(t, 1, reg.found("nse"), "the first Request looked the endpoint up")
	require.Equal(t, 1, reg.foundService(service), "the first Request looked the service up")
	require.Eventually(t, func() bool { return reg.tookIn("nse", false) }, 10*time.Second, time.Millisecond,
		"the forwarder watches the endpoint")
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	conn, err = direct.Request(ctx, refresh)
	require.NoError(t, err)
	_, err = direct.Close(ctx, conn)
	require.NoError(t, err)
	second, err := direct.Request(ctx, req.Clone())
	require.NoError(t, err)
	require.NotEqual(t, conn.GetId(), second.GetId(), "another connection to the same endpoint")
	_, err = direct.Close(ctx, second)
	require.NoError(t, err)
	require.Equal(t, 1, reg.found("nse"), "the refresh, the other connection and the Closes were answered from the cache")
	require.Equal(t, 1, reg.foundService(service), "and so were their service lookups")

	found := d.FindEndpoints(ctx, "nse")
	require.Len(t, found, 1)
	require.NoError(t, d.UnregisterEndpoint(ctx, "nse", found[0]), "the endpoint unregisters, and still serves")
	require.Eventually(t, func() bool { return reg.tookIn("nse", true) }, 10*time.Second, time.Millisecond,
		"the watch told the forwarder")
	_, err = direct.Request(ctx, req.Clone())
	require.Equal(t, codes.NotFound, status.Code(err), "an unregistered endpoint is not found: %v", err)
}
