package excludedprefixes_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/excludedprefixes"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func request(id string, excluded ...string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: id, Context: &networkservice.ConnectionContext{IpContext: &networkservice.IPContext{ExcludedPrefixes: excluded}},
	}}
}

func TestServerAddsConfiguredPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured []string
		request    *networkservice.NetworkServiceRequest
		want       []string
	}{
		{"IPv4 to an empty request", []string{"10.96.0.0/12", "10.244.0.0/16"}, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}}, []string{"10.96.0.0/12", "10.244.0.0/16"}},
		{"IPv6 after existing ones", []string{"fd10::/108", "fd20::/64"}, request("c", "fd30::/64"), []string{"fd30::/64", "fd10::/108", "fd20::/64"}},
		{"dual stack, duplicates dropped as masked prefixes", []string{"10.96.0.5/12", "fd10::/108", "10.96.0.0/12"}, request("c", "fd10::1/108", "192.168.0.0/16", "192.168.0.0/16"), []string{"fd10::1/108", "192.168.0.0/16", "10.96.0.0/12"}},
		{"nothing configured", nil, request("c", "10.0.0.0/8"), []string{"10.0.0.0/8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := checks.NewServer()
			s := chain.NewNetworkServiceServer(excludedprefixes.NewServer(prefixes(tc.configured...)...), rec)
			conn, err := s.Request(context.Background(), tc.request)
			require.NoError(t, err)
			require.Equal(t, tc.want, rec.Requests()[0].GetConnection().GetContext().GetIpContext().GetExcludedPrefixes())

			_, err = s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn.Clone()})
			require.NoError(t, err)
			require.Equal(t, tc.want, rec.Requests()[1].GetConnection().GetContext().GetIpContext().GetExcludedPrefixes(), "a refresh adds no duplicates")
		})
	}
}

func TestBadExcludedPrefixIsInvalidArgument(t *testing.T) {
	for _, tc := range []struct {
		name    string
		element networkservice.NetworkServiceServer
	}{
		{"server", excludedprefixes.NewServer(prefixes("10.96.0.0/12")...)},
		{"client", adapters.NewClientToServer(chain.NewNetworkServiceClient(metadata.NewClient(), excludedprefixes.NewClient(prefixes("fd10::/108")...)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := checks.NewServer()
			_, err := chain.NewNetworkServiceServer(tc.element, rec).Request(context.Background(), request("c", "10.0.0.0/8", "fd00::/129"))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), `connection.context.ip_context.excluded_prefixes[1]: "fd00::/129"`)
			require.Empty(t, rec.Requests(), "nothing is sent on")
		})
	}
}

func TestConstructorsPanicOnInvalidPrefix(t *testing.T) {
	require.PanicsWithValue(t, "excludedprefixes: NewServer: prefix 1 is not a valid CIDR", func() {
		excludedprefixes.NewServer(netip.MustParsePrefix("10.0.0.0/8"), netip.Prefix{})
	})
	require.PanicsWithValue(t, "excludedprefixes: NewClient: prefix 0 is not a valid CIDR", func() {
		excludedprefixes.NewClient(netip.Prefix{})
	})
}

// byService sends each request to the endpoint of its network service.
type byService map[string]networkservice.NetworkServiceServer

func (b byService) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return b[req.GetConnection().GetNetworkService()].Request(ctx, req)
}

func (b byService) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return b[conn.GetNetworkService()].Close(ctx, conn)
}

// mesh is a client with the element, and two endpoints that draw from the same prefix.
type mesh struct {
	client networkservice.NetworkServiceClient
	seen   *checks.Recorder // what the endpoints receive
}

func newMesh(prefix string, configured ...string) *mesh {
	endpoint := func() networkservice.NetworkServiceServer {
		return chain.NewNetworkServiceServer(metadata.NewServer(), point2pointipam.NewServer(netip.MustParsePrefix(prefix)))
	}
	m := &mesh{seen: checks.NewServer()}
	m.client = chain.NewNetworkServiceClient(
		metadata.NewClient(),
		excludedprefixes.NewClient(prefixes(configured...)...),
		adapters.NewServerToClient(chain.NewNetworkServiceServer(m.seen, byService{"a": endpoint(), "b": endpoint()})),
	)
	return m
}

func (m *mesh) request(t *testing.T, id, service string) *networkservice.Connection {
	t.Helper()
	conn, err := m.client.Request(context.Background(), &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: id, NetworkService: service},
	})
	require.NoError(t, err)
	return conn
}

func (m *mesh) lastExcluded() []string {
	reqs := m.seen.Requests()
	return reqs[len(reqs)-1].GetConnection().GetContext().GetIpContext().GetExcludedPrefixes()
}

func addrs(conn *networkservice.Connection) []string {
	ipc := conn.GetContext().GetIpContext()
	return append(append([]string(nil), ipc.GetSrcIpAddrs()...), ipc.GetDstIpAddrs()...)
}

func TestClientKeepsVWiresApart(t *testing.T) {
	for _, f := range []struct {
		name, prefix, configured string
		host                     func(n int) string
	}{
		{"IPv4", "10.0.0.0/24", "10.96.0.0/12", func(n int) string { return fmt.Sprintf("10.0.0.%d/32", n) }},
		{"IPv6", "fd00::/64", "fd10::/108", func(n int) string { return fmt.Sprintf("fd00::%d/128", n) }},
	} {
		t.Run(f.name, func(t *testing.T) {
			m := newMesh(f.prefix, f.configured)
			a := m.request(t, "to-a", "a")
			require.Equal(t, []string{f.host(2), f.host(1)}, addrs(a))
			require.Equal(t, []string{f.configured}, m.lastExcluded())
			require.Empty(t, a.GetContext().GetIpContext().GetExcludedPrefixes(), "the client's additions are not returned")

			// Endpoint b draws from the same prefix; the client excludes what a holds.
			b := m.request(t, "to-b", "b")
			require.Equal(t, []string{f.host(4), f.host(3)}, addrs(b))
			require.Equal(t, []string{f.configured, f.host(1), f.host(2)}, m.lastExcluded())
			require.Empty(t, b.GetContext().GetIpContext().GetExcludedPrefixes())

			// A refresh excludes the other connection's prefixes, not its own.
			a, err := m.client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: a})
			require.NoError(t, err)
			require.Equal(t, []string{f.host(2), f.host(1)}, addrs(a))
			require.Equal(t, []string{f.configured, f.host(3), f.host(4)}, m.lastExcluded())

			// Once a is closed, its addresses are free for the client's next vWire.
			_, err = m.client.Close(context.Background(), a)
			require.NoError(t, err)
			c := m.request(t, "to-b-again", "b")
			require.Equal(t, []string{f.host(2), f.host(1)}, addrs(c))
			require.Equal(t, []string{f.configured, f.host(3), f.host(4)}, m.lastExcluded())
		})
	}
}

// careless is an endpoint that hands out the same addresses to every connection.
type careless struct{ src, dst string }

func (c careless) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection()
	conn.Context.IpContext.SrcIpAddrs = []string{c.src}
	conn.Context.IpContext.DstIpAddrs = []string{c.dst}
	conn.NetworkServiceEndpointName = "careless-nse"
	return conn, nil
}

func (careless) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func TestClientRejectsAnEndpointThatIgnoresExclusions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured []string
		endpoint   careless
		second     string // the address the second connection fails on
	}{
		{"IPv4 overlap with another vWire", nil, careless{"10.0.0.2/32", "10.0.0.1/32"}, "10.0.0.2/32"},
		{"IPv6 overlap with another vWire's subnet", nil, careless{"fd00::9/64", "fd00::1/64"}, "fd00::9/64"},
		{"IPv4 in a configured prefix", []string{"10.0.0.0/31"}, careless{"10.0.0.3/32", "10.0.0.1/32"}, "10.0.0.1/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := checks.NewServer()
			client := chain.NewNetworkServiceClient(
				metadata.NewClient(),
				excludedprefixes.NewClient(prefixes(tc.configured...)...),
				adapters.NewServerToClient(chain.NewNetworkServiceServer(seen, tc.endpoint)),
			)
			first, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "first"}})
			if len(tc.configured) > 0 {
				require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
				require.Contains(t, err.Error(), `endpoint "careless-nse" handed out `+tc.second)
				require.Equal(t, "first", seen.Closes()[0].GetId(), "the connection is closed again")
				return
			}
			require.NoError(t, err)
			_, err = client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "second"}})
			require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), `endpoint "careless-nse" handed out `+tc.second)
			require.Len(t, seen.Closes(), 1)
			require.Equal(t, "second", seen.Closes()[0].GetId(), "the connection is closed again")
			require.Equal(t, []string{"first"}, seen.Open())

			// The first connection's refresh is still accepted: its own addresses are not excluded.
			_, err = client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: first})
			require.NoError(t, err)
		})
	}
}

// failing answers every Request with an error.
type failing struct{}

func (failing) Request(context.Context, *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return nil, status.Error(codes.Unavailable, "endpoint down")
}

func (failing) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestClientPutsTheRequestBackOnFailure(t *testing.T) {
	client := chain.NewNetworkServiceClient(metadata.NewClient(), excludedprefixes.NewClient(prefixes("10.96.0.0/12")...), adapters.NewServerToClient(failing{}))
	req := request("c", "192.168.0.0/16")
	_, err := client.Request(context.Background(), req)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, []string{"192.168.0.0/16"}, req.GetConnection().GetContext().GetIpContext().GetExcludedPrefixes())
}
