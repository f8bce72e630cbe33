package kernel_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/fdpass"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	kernelmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/kernel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ipContext(src, dst string) *networkservice.IPContext {
	return &networkservice.IPContext{
		SrcIpAddrs: []string{src}, DstIpAddrs: []string{dst},
		SrcRoutes: []*networkservice.Route{{Prefix: dst}}, DstRoutes: []*networkservice.Route{{Prefix: src}},
	}
}

// request is a client's first Request for a vWire nsm-1 in the namespace at netnsURL, as the
// server side of a forwarder gets it (the mechanism chosen), with the endpoint's context.
func request(netnsURL string, ipc *networkservice.IPContext) *networkservice.NetworkServiceRequest {
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetNetNSURL(netnsURL)
	mech.SetInterfaceName("nsm-1")
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: "conn-1", NetworkService: "icmp-responder", Mechanism: mech.Mechanism,
		Context: &networkservice.ConnectionContext{IpContext: ipc, MTU: 1400},
	}}
}

type server struct {
	chain networkservice.NetworkServiceServer
	fail  *inject.Errors
	rec   *checks.Recorder
}

// newServer is the server element in a chain; most tests name namespaces by path (opts has
// WithNetNSPaths) and TestServerOpensAPassedNamespace by descriptor.
func newServer(fwd netns.NsHandle, opts ...kernelmech.Option) *server {
	s := &server{fail: inject.NewServer(nil), rec: checks.NewServer()}
	s.chain = next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(), kernelmech.NewServer(fwd, opts...), s.fail, s.rec)
	return s
}

var paths = kernelmech.WithNetNSPaths()

func TestServer(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	nsc, nscName := nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}
	s := newServer(fwd, paths)

	req := request(nstest.URL(nscName), &networkservice.IPContext{
		SrcIpAddrs: []string{"172.16.0.1/32", "fd16::1/128"}, DstIpAddrs: []string{"172.16.0.0/32", "fd16::/128"},
		SrcRoutes: []*networkservice.Route{{Prefix: "10.96.0.0/16"}},
	})
	conn, err := s.chain.Request(ctx, req.Clone())
	require.NoError(t, err)
	nstest.Golden(t, "forwarder:\n"+nstest.Dump(t, fwd)+"client:\n"+nstest.Dump(t, nsc))
	_, err = nstest.Handle(t, fwd).LinkByName(ifname.Name("conn-1", ifname.Client))
	require.NoError(t, err, "the forwarder's end is named by ifname")

	during := nstest.Dump(t, nsc)
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	conn, err = s.chain.Request(ctx, refresh)
	require.NoError(t, err)
	require.Equal(t, during, nstest.Dump(t, nsc), "a refresh keeps the vWire as it is")

	readdress := req.Clone()
	readdress.Connection = conn.Clone()
	readdress.Connection.Context.IpContext = ipContext("172.16.0.3/32", "172.16.0.2/32")
	conn, err = s.chain.Request(ctx, readdress)
	require.NoError(t, err)
	addrs, err := nstest.Handle(t, nsc).AddrList(nil, netlink.FAMILY_ALL)
	require.NoError(t, err)
	var got []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.IPNet.String())
		}
	}
	require.Equal(t, []string{"172.16.0.3/32"}, got, "a refresh with new addresses replaces the old")

	_, err = s.chain.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, s.rec.Open(), "Close went on")
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}, "nothing is left")
	_, err = s.chain.Close(ctx, conn)
	require.NoError(t, err, "a second Close is fine")
}

// TestServerRefusesBadMechanisms: a client naming a namespace it does not hold (an inode URL
// whose descriptor did not come, a path while paths are not allowed, a path of the forwarder's
// own even when they are) or a malformed one is refused before next: nothing is made.
func TestServerRefusesBadMechanisms(t *testing.T) {
	fwd, _ := nstest.New(t)
	_, nscName := nstest.New(t)
	self := func(m *kernel.Mechanism) { m.SetNetNSURL(fmt.Sprintf("file:///proc/%d/ns/net", os.Getpid())) }
	tests := []struct {
		name   string
		paths  bool
		change func(*kernel.Mechanism)
		code   codes.Code
	}{
		{"no netns", true, func(m *kernel.Mechanism) { delete(m.GetParameters(), kernel.NetNSURL) }, codes.InvalidArgument},
		{"inode URL not passed", false, func(m *kernel.Mechanism) { m.SetNetNSURL("inode://4/4026532000") }, codes.PermissionDenied},
		{"malformed inode URL", false, func(m *kernel.Mechanism) { m.SetNetNSURL("inode://4/x") }, codes.InvalidArgument},
		{"path not allowed", false, func(*kernel.Mechanism) {}, codes.PermissionDenied},
		{"the node's namespace by path", false, func(m *kernel.Mechanism) { m.SetNetNSURL("file:///proc/1/ns/net") }, codes.PermissionDenied},
		{"/proc/self", true, func(m *kernel.Mechanism) { m.SetNetNSURL("file:///proc/self/ns/net") }, codes.PermissionDenied},
		{"/proc/thread-self", true, func(m *kernel.Mechanism) { m.SetNetNSURL("file:///proc/thread-self/ns/net") }, codes.PermissionDenied},
		{"the forwarder's pid", true, self, codes.PermissionDenied},
		{"relative path", true, func(m *kernel.Mechanism) { m.SetNetNSURL("file://proc/1/ns/net") }, codes.InvalidArgument},
		{"name too long", true, func(m *kernel.Mechanism) { m.SetInterfaceName("a-name-too-long-0") }, codes.InvalidArgument},
		{"no name", true, func(m *kernel.Mechanism) { m.SetInterfaceName("") }, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []kernelmech.Option
			if tt.paths {
				opts = append(opts, paths)
			}
			s := newServer(fwd, opts...)
			req := request(nstest.URL(nscName), nil)
			tt.change(kernel.ToMechanism(req.GetConnection().GetMechanism()))
			_, err := s.chain.Request(context.Background(), req)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), "kernel: the client's mechanism parameter")
			require.Empty(t, s.rec.Requests(), "nothing went on")
		})
	}
}

// TestServerRefusesTheForwardersOwnNamespace: a path that names the forwarder's own namespace
// by another name is refused once opened, and what next made is closed.
func TestServerRefusesTheForwardersOwnNamespace(t *testing.T) {
	fwd, fwdName := nstest.New(t)
	before := nstest.Dump(t, fwd)
	s := newServer(fwd, paths)
	_, err := s.chain.Request(context.Background(), request(nstest.URL(fwdName), ipContext("172.16.0.1/32", "172.16.0.0/32")))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "is the forwarder's own")
	require.Empty(t, s.rec.Open(), "what next made was closed")
	require.Equal(t, before, nstest.Dump(t, fwd))
}

// passed returns the inode URL of the named namespace and the files a recvfd server would hold
// for it: a descriptor opened O_PATH, as NSM's clients send it.
func passed(t *testing.T, name string) (string, *fdpass.Files) {
	f, err := os.OpenFile("/var/run/netns/"+name, unix.O_PATH|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	u, err := fdpass.URLOf(f)
	require.NoError(t, err)
	files := fdpass.NewFiles()
	files.Put(u, f)
	t.Cleanup(files.Close)
	return u, files
}

// TestServerOpensAPassedNamespace: with the client's namespace passed as a descriptor (and
// paths not allowed) the vWire is made in it; Close leaves nothing, not even a descriptor.
func TestServerOpensAPassedNamespace(t *testing.T) {
	fwd, _ := nstest.New(t)
	nsc, nscName := nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}
	u, files := passed(t, nscName)
	ctx := fdpass.WithFiles(context.Background(), files)
	s := newServer(fwd)
	fds := nstest.HandlesOn(t, nsc)

	conn, err := s.chain.Request(ctx, request(u, ipContext("172.16.0.1/32", "172.16.0.0/32")))
	require.NoError(t, err)
	_, err = nstest.Handle(t, nsc).LinkByName("nsm-1")
	require.NoError(t, err, "the vWire is in the namespace passed")
	require.Equal(t, fds+1, nstest.HandlesOn(t, nsc), "the vWire holds its namespace")
	_, err = s.chain.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}, "nothing is left")
	require.Equal(t, fds, nstest.HandlesOn(t, nsc), "the element let go of the namespace")
}

func TestServerUndoesWhatFails(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	nsc, nscName := nstest.New(t)
	h := nstest.Handle(t, nsc)
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nsm-1"}, PeerName: "other"}))
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}

	s := newServer(fwd, paths)
	_, err := s.chain.Request(ctx, request(nstest.URL(nscName), nil))
	require.Equal(t, codes.AlreadyExists, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), `kernel: the client's vWire: veth: interface "nsm-1" already exists`)
	require.Len(t, s.rec.Closes(), 1, "what next made was closed")
	require.Empty(t, s.rec.Open())
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}, "nothing is left")

	s.fail.FailRequests(status.Error(codes.Unavailable, "endpoint down"))
	require.NoError(t, h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nsm-1"}}))
	before = [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}
	_, err = s.chain.Request(ctx, request(nstest.URL(nscName), nil))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nsc)}, "nothing is made when next fails")
}

func TestServerConformance(t *testing.T) {
	fwd, _ := nstest.New(t)
	_, nscName := nstest.New(t)
	conformance.Run(t, conformance.Case{
		Name:   "kernel server",
		Server: func(context.Context) networkservice.NetworkServiceServer { return kernelmech.NewServer(fwd, paths) },
		Request: func() *networkservice.NetworkServiceRequest {
			return request(nstest.URL(nscName), ipContext("172.16.0.1/32", "172.16.0.0/32"))
		},
	})
}

// endpoint stands for a local endpoint: it takes the first KERNEL preference, states its
// namespace (unless netnsURL is empty) and returns the connection with its context.
type endpoint struct {
	netnsURL string
	other    string // a mechanism type to choose instead, if set
	ifName   string // an interface name to answer with, if set
}

func (e endpoint) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	if conn.GetMechanism() == nil {
		for _, m := range req.GetMechanismPreferences() {
			if m.GetType() == kernel.MECHANISM {
				conn.Mechanism = m.Clone()
			}
		}
		if e.other != "" {
			conn.Mechanism = &networkservice.Mechanism{Cls: cls.REMOTE, Type: e.other}
		}
	}
	if mech := kernel.ToMechanism(conn.GetMechanism()); mech != nil && e.netnsURL != "" {
		mech.SetNetNSURL(e.netnsURL)
	}
	if mech := kernel.ToMechanism(conn.GetMechanism()); mech != nil && e.ifName != "" {
		mech.SetInterfaceName(e.ifName)
	}
	return conn, nil
}

func (endpoint) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func clientChain(fwd netns.NsHandle, rec *checks.Recorder, ep networkservice.NetworkServiceServer) networkservice.NetworkServiceClient {
	return next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), kernelmech.NewClient(fwd, paths),
		adapters.NewServerToClient(rec), adapters.NewServerToClient(ep))
}

func TestClient(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	nse, nseName := nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}
	rec := checks.NewServer()
	c := clientChain(fwd, rec, endpoint{netnsURL: nstest.URL(nseName)})

	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: "conn-1", NetworkService: "icmp-responder", Payload: payload.Ethernet,
		Context: &networkservice.ConnectionContext{
			IpContext:       ipContext("172.16.0.1/32", "172.16.0.0/32"),
			EthernetContext: &networkservice.EthernetContext{SrcMac: "02:00:00:00:00:01", DstMac: "02:00:00:00:00:02"},
		},
	}}
	conn, err := c.Request(ctx, req.Clone())
	require.NoError(t, err)
	offered := rec.Requests()[0].GetMechanismPreferences()
	require.Len(t, offered, 1)
	require.Equal(t, kernelmech.DefaultName(req.GetConnection()), kernel.ToMechanism(offered[0]).GetInterfaceName())
	nstest.Golden(t, "forwarder:\n"+nstest.Dump(t, fwd)+"endpoint:\n"+nstest.Dump(t, nse))

	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}, "nothing is left")
}

func TestClientRefusesABadAnswer(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	before := nstest.Dump(t, fwd)
	rec := checks.NewServer()
	c := clientChain(fwd, rec, endpoint{})
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "ns", NetworkServiceEndpointName: "nse-1"}}
	_, err := c.Request(ctx, req)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), `endpoint "nse-1" accepted KERNEL without a network namespace`)
	require.Empty(t, rec.Open(), "what next made was closed")
	require.Equal(t, before, nstest.Dump(t, fwd))
}

// TestClientLeavesOtherMechanisms: a next hop that chose a tunnel gets no vWire, and a refresh
// that moves from KERNEL to a tunnel removes the vWire.
func TestClientLeavesOtherMechanisms(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	nse, nseName := nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}
	rec := checks.NewServer()
	ep := &switchable{endpoint: endpoint{netnsURL: nstest.URL(nseName)}}
	c := clientChain(fwd, rec, ep)

	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: "conn-1", NetworkService: "ns", Context: &networkservice.ConnectionContext{IpContext: ipContext("172.16.0.1/32", "172.16.0.0/32")},
	}}
	conn, err := c.Request(ctx, req.Clone())
	require.NoError(t, err)
	require.NotEqual(t, before[1], nstest.Dump(t, nse), "a vWire is there")

	ep.other = vxlan.MECHANISM
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	refresh.Connection.Mechanism = nil
	conn, err = c.Request(ctx, refresh)
	require.NoError(t, err)
	require.Equal(t, vxlan.MECHANISM, conn.GetMechanism().GetType())
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}, "the vWire is gone")
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
}

type switchable struct{ endpoint }

// TestClientKeepsItsVWireWhenARefreshAnswerIsBad: a refresh the endpoint answers badly fails
// and leaves the connection's vWire as it was, for Close to remove.
func TestClientKeepsItsVWireWhenARefreshAnswerIsBad(t *testing.T) {
	ctx := context.Background()
	fwd, _ := nstest.New(t)
	nse, nseName := nstest.New(t)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}
	ep := &switchable{endpoint: endpoint{netnsURL: nstest.URL(nseName)}}
	c := clientChain(fwd, checks.NewServer(), ep)
	req := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: "conn-1", NetworkService: "ns", Context: &networkservice.ConnectionContext{IpContext: ipContext("172.16.0.1/32", "172.16.0.0/32")},
	}}
	conn, err := c.Request(ctx, req.Clone())
	require.NoError(t, err)
	made := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}

	ep.ifName = "a-name-longer-than-15"
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	_, err = c.Request(ctx, refresh)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Equal(t, made, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}, "the vWire stays")

	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, nse)}, "Close removed the vWire")
}

func TestDefaultName(t *testing.T) {
	for _, tt := range []struct{ service, want string }{
		{"icmp-responder", "icmp-r-"},
		{"vpn@corp.example", "vpn-"},
		{"a/b:c d", "a-b-c--"},
		{"", "nsm-"},
	} {
		name := kernelmech.DefaultName(&networkservice.Connection{Id: "conn-1", NetworkService: tt.service})
		require.True(t, len(name) <= 15 && len(name) == len(tt.want)+8, name)
		require.Equal(t, tt.want, name[:len(tt.want)], name)
	}
	require.NotEqual(t, kernelmech.DefaultName(&networkservice.Connection{Id: "a", NetworkService: "s"}),
		kernelmech.DefaultName(&networkservice.Connection{Id: "b", NetworkService: "s"}), "one name per connection")
}

func TestClientConformance(t *testing.T) {
	fwd, _ := nstest.New(t)
	conformance.Run(t, conformance.Case{
		Name:   "kernel client",
		Client: func(context.Context) networkservice.NetworkServiceClient { return kernelmech.NewClient(fwd) },
		Request: func() *networkservice.NetworkServiceRequest {
			return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "ns"}}
		},
	})
}
