package roundrobin_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/registry/common/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "icmp-responder"

// Endpoints on both address families.
var urls = map[string]string{
	"nse-a": "tcp://127.0.0.1:5001",
	"nse-b": "tcp://[fd00::2]:5001",
	"nse-c": "unix:///var/lib/vwire/nse-c.sock",
	"nse-d": "tcp://[::1]:5004",
}

// hops stands in for the next hops: it fails Requests sent to the URLs in fail, and records
// each Request that reached it as "name@url" and the URL of each Close.
type hops struct {
	mu       sync.Mutex
	fail     map[string]error
	requests []string
	closes   []string
	// onFail runs when a Request fails, for a test that ends the Request's context there.
	onFail func()
}

func hop(ctx context.Context) string {
	if u := clienturl.ClientURL(ctx); u != nil {
		return u.String()
	}
	return "<nil>"
}

func (h *hops) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	u := hop(ctx)
	h.mu.Lock()
	err := h.fail[u]
	if err == nil {
		h.requests = append(h.requests, req.GetConnection().GetNetworkServiceEndpointName()+"@"+u)
	}
	h.mu.Unlock()
	if err != nil {
		if h.onFail != nil {
			h.onFail()
		}
		return nil, err
	}
	return next.Server(ctx).Request(ctx, req)
}

func (h *hops) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	h.mu.Lock()
	h.closes = append(h.closes, hop(ctx))
	h.mu.Unlock()
	return next.Server(ctx).Close(ctx, conn)
}

func (h *hops) take() (requests, closes []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	requests, closes = h.requests, h.closes
	h.requests, h.closes = nil, nil
	return requests, closes
}

// mesh registers services (name -> its endpoints' names, in route order; weights per endpoint
// when given) and returns the chain [metadata, discover, roundrobin, hops].
func mesh(t testing.TB, services map[string][]string, weights map[string]uint32, before ...networkservice.NetworkServiceServer) (networkservice.NetworkServiceServer, *hops) {
	t.Helper()
	ctx := context.Background()
	nsReg, nseReg := memory.NewNS(), memory.NewNSE()
	for name, nses := range services {
		ns := &registry.NetworkService{Name: name, Payload: "IP"}
		if weights != nil {
			m := &registry.Match{}
			for _, n := range nses {
				m.Routes = append(m.Routes, &registry.Destination{DestinationSelector: map[string]string{"name": n}, Weight: weights[n]})
			}
			ns.Matches = []*registry.Match{m}
		}
		_, err := nsReg.Register(ctx, ns)
		require.NoError(t, err)
		for _, n := range nses {
			_, err := nseReg.Register(ctx, &registry.NetworkServiceEndpoint{
				Name:                 n + suffix(name),
				Url:                  urls[n],
				NetworkServiceNames:  []string{name},
				NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{name: {Labels: map[string]string{"name": n}}},
			})
			require.NoError(t, err)
		}
	}
	h := &hops{fail: map[string]error{}}
	elems := append([]networkservice.NetworkServiceServer{metadata.NewServer()}, before...)
	elems = append(elems, discover.NewServer(nsReg, nseReg), roundrobin.NewServer(), h)
	return next.NewNetworkServiceServer(elems...), h
}

// suffix keeps endpoint names apart across services.
func suffix(service string) string {
	if service == "icmp-responder" {
		return ""
	}
	return "." + service
}

func request(id, service string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, NetworkService: service}}
}

func TestRotation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		services map[string][]string
		weights  map[string]uint32
		requests []string // services asked for, in order
		want     []string // endpoint names reached
	}{
		{
			name:     "equal turns",
			services: map[string][]string{service: {"nse-a", "nse-b", "nse-c"}},
			requests: []string{service, service, service, service, service, service},
			want:     []string{"nse-a", "nse-b", "nse-c", "nse-a", "nse-b", "nse-c"},
		},
		{
			name:     "weights 3 and 1",
			services: map[string][]string{service: {"nse-a", "nse-b"}},
			weights:  map[string]uint32{"nse-a": 3, "nse-b": 1},
			requests: []string{service, service, service, service, service, service, service, service},
			want:     []string{"nse-a", "nse-a", "nse-b", "nse-a", "nse-a", "nse-a", "nse-b", "nse-a"},
		},
		{
			name:     "a weight left out counts 1",
			services: map[string][]string{service: {"nse-a", "nse-b"}},
			weights:  map[string]uint32{"nse-b": 2},
			requests: []string{service, service, service, service, service, service},
			want:     []string{"nse-b", "nse-a", "nse-b", "nse-b", "nse-a", "nse-b"},
		},
		{
			name:     "turns per network service",
			services: map[string][]string{service: {"nse-a", "nse-b"}, "vpn": {"nse-c", "nse-d"}},
			requests: []string{service, "vpn", service, "vpn", "vpn"},
			want:     []string{"nse-a", "nse-c.vpn", "nse-b", "nse-d.vpn", "nse-c.vpn"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, h := mesh(t, tc.services, tc.weights)
			var got []string
			for i, s := range tc.requests {
				conn, err := chain.Request(context.Background(), request(fmt.Sprintf("conn-%d", i), s))
				require.NoError(t, err)
				got = append(got, conn.GetNetworkServiceEndpointName())
			}
			require.Equal(t, tc.want, got)
			reached, _ := h.take()
			for i, name := range got {
				base := name[:5]
				require.Equal(t, name+"@"+urls[base], reached[i], "the next hop gets the endpoint's name and URL")
			}
		})
	}
}

func TestFailover(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection refused")
	for _, tc := range []struct {
		name    string
		nses    []string
		fail    map[string]error
		want    string // endpoint that accepts; "" for an error
		code    codes.Code
		message string
	}{
		{
			name: "next endpoint after Unavailable",
			nses: []string{"nse-a", "nse-b"},
			fail: map[string]error{"nse-a": unavailable},
			want: "nse-b",
		},
		{
			name: "retried codes",
			nses: []string{"nse-a", "nse-b", "nse-c", "nse-d"},
			fail: map[string]error{
				"nse-a": status.Error(codes.DeadlineExceeded, "hop timed out"),
				"nse-b": status.Error(codes.ResourceExhausted, "full"),
				"nse-c": errors.New("not a status: Unknown"),
			},
			want: "nse-d",
		},
		{
			name: "all failed",
			nses: []string{"nse-a", "nse-b"},
			fail: map[string]error{"nse-a": unavailable, "nse-b": unavailable},
			code: codes.Unavailable,
			message: `roundrobin: no endpoint of "icmp-responder" accepted the request; tried ` +
				`nse-a (tcp://127.0.0.1:5001): Unavailable: connection refused; nse-b (tcp://[fd00::2]:5001): Unavailable: connection refused`,
		},
		{
			name: "all failed alike keep their code",
			nses: []string{"nse-a", "nse-b"},
			fail: map[string]error{
				"nse-a": status.Error(codes.ResourceExhausted, "full"),
				"nse-b": status.Error(codes.ResourceExhausted, "full"),
			},
			code:    codes.ResourceExhausted,
			message: "nse-b (tcp://[fd00::2]:5001): ResourceExhausted: full",
		},
		{
			name: "all failed differently are Unavailable",
			nses: []string{"nse-a", "nse-b"},
			fail: map[string]error{"nse-a": unavailable, "nse-b": status.Error(codes.Aborted, "try later")},
			code: codes.Unavailable,
		},
		{
			name: "a refusal is not retried",
			nses: []string{"nse-a", "nse-b", "nse-c"},
			fail: map[string]error{"nse-a": unavailable, "nse-b": status.Error(codes.PermissionDenied, "not for you")},
			code: codes.PermissionDenied,
			message: `roundrobin: no endpoint of "icmp-responder" accepted the request; tried nse-a (tcp://127.0.0.1:5001): Unavailable: connection refused; ` +
				`nse-b (tcp://[fd00::2]:5001): PermissionDenied: not for you; not retried after PermissionDenied, 1 left untried`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, h := mesh(t, map[string][]string{service: tc.nses}, nil)
			for n, err := range tc.fail {
				h.fail[urls[n]] = err
			}
			conn, err := chain.Request(context.Background(), request("conn-1", service))
			if tc.want == "" {
				require.Error(t, err)
				require.Equal(t, tc.code, status.Code(err), err)
				require.Contains(t, status.Convert(err).Message(), tc.message)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, conn.GetNetworkServiceEndpointName())
			reached, _ := h.take()
			require.Equal(t, []string{tc.want + "@" + urls[tc.want]}, reached)

			_, err = chain.Close(context.Background(), conn)
			require.NoError(t, err)
			_, closes := h.take()
			require.Equal(t, []string{urls[tc.want]}, closes, "Close goes to the endpoint that accepted")
		})
	}
}

func TestBadURLIsSkipped(t *testing.T) {
	good := urls["nse-a"]
	urls["nse-a"] = "tcp://127.0.0.1" // no port
	chain, h := mesh(t, map[string][]string{service: {"nse-a", "nse-b"}}, nil)
	urls["nse-a"] = good

	conn, err := chain.Request(context.Background(), request("conn-1", service))
	require.NoError(t, err)
	require.Equal(t, "nse-b", conn.GetNetworkServiceEndpointName())

	h.fail[urls["nse-b"]] = status.Error(codes.Unavailable, "connection refused")
	_, err = chain.Request(context.Background(), request("conn-2", service))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, err.Error(), `nse-a (tcp://127.0.0.1): Unavailable: hopurl: next-hop URL "tcp://127.0.0.1"`)
}

func TestCancelledWhileTrying(t *testing.T) {
	chain, h := mesh(t, map[string][]string{service: {"nse-a", "nse-b"}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.fail[urls["nse-a"]] = status.Error(codes.Unavailable, "connection refused")
	h.onFail = cancel

	_, err := chain.Request(ctx, request("conn-1", service))
	require.Equal(t, codes.Canceled, status.Code(err), err)
	require.Contains(t, err.Error(), "then the request's context ended (context canceled), 1 left untried")
	reached, _ := h.take()
	require.Empty(t, reached, "nothing is tried once the caller gave up")
}

// hideName makes discover see no endpoint name (so that it offers every candidate) and gives
// the name back after it, to test roundrobin's order with a name among several candidates.
type hideName struct {
	name    *string
	restore bool
}

func (e hideName) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if e.restore {
		req.GetConnection().NetworkServiceEndpointName = *e.name
	} else {
		*e.name, req.GetConnection().NetworkServiceEndpointName = req.GetConnection().GetNetworkServiceEndpointName(), ""
	}
	return next.Server(ctx).Request(ctx, req)
}

func (e hideName) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestRefreshAndReselect(t *testing.T) {
	var name string
	nsReg, nseReg := memory.NewNS(), memory.NewNSE()
	ctx := context.Background()
	_, err := nsReg.Register(ctx, &registry.NetworkService{Name: service})
	require.NoError(t, err)
	for _, n := range []string{"nse-a", "nse-b", "nse-c"} {
		_, err := nseReg.Register(ctx, &registry.NetworkServiceEndpoint{Name: n, Url: urls[n], NetworkServiceNames: []string{service}})
		require.NoError(t, err)
	}
	h := &hops{fail: map[string]error{}}
	chain := next.NewNetworkServiceServer(metadata.NewServer(), hideName{name: &name}, discover.NewServer(nsReg, nseReg),
		hideName{name: &name, restore: true}, roundrobin.NewServer(), h)
	ask := func(req *networkservice.NetworkServiceRequest) string {
		t.Helper()
		conn, err := chain.Request(ctx, req)
		require.NoError(t, err)
		return conn.GetNetworkServiceEndpointName()
	}

	require.Equal(t, "nse-a", ask(request("conn-1", service)))
	refresh := request("conn-1", service)
	refresh.Connection.NetworkServiceEndpointName = "nse-c"
	require.Equal(t, "nse-c", ask(refresh), "a refresh goes to its endpoint")
	require.Equal(t, "nse-b", ask(request("conn-2", service)), "a refresh does not move the turn on")

	h.fail[urls["nse-c"]] = status.Error(codes.Unavailable, "connection refused")
	require.Equal(t, "nse-a", ask(refresh), "a refresh whose endpoint fails moves to the next candidate")
	delete(h.fail, urls["nse-c"])

	// conn-1 is at nse-a now, and it is nse-c's turn, then nse-a's.
	require.Equal(t, "nse-c", ask(request("conn-3", service)))
	reselect := request("conn-1", service)
	reselect.Connection.State = networkservice.State_RESELECT_REQUESTED
	require.Equal(t, "nse-b", ask(reselect), "a reselect tries the endpoint it had last")
	h.take()

	_, err = chain.Close(ctx, &networkservice.Connection{Id: "conn-1", NetworkService: service})
	require.NoError(t, err)
	_, closes := h.take()
	require.Equal(t, []string{urls["nse-b"]}, closes)
}

func TestRefreshFailureKeepsTheEndpoint(t *testing.T) {
	chain, h := mesh(t, map[string][]string{service: {"nse-a"}}, nil)
	conn, err := chain.Request(context.Background(), request("conn-1", service))
	require.NoError(t, err)
	h.fail[urls["nse-a"]] = status.Error(codes.Unavailable, "connection refused")
	_, err = chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
	require.Error(t, err)

	_, err = chain.Close(context.Background(), conn)
	require.NoError(t, err)
	_, closes := h.take()
	require.Equal(t, []string{urls["nse-a"]}, closes)
}

func TestCloseAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint string
		want     string // URL the Close goes to
	}{
		{"endpoint still registered", "nse-b", urls["nse-b"]},
		{"endpoint gone", "nse-x", "<nil>"},
		{"no endpoint named", "", "<nil>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, h := mesh(t, map[string][]string{service: {"nse-a", "nse-b"}}, nil)
			conn := &networkservice.Connection{Id: "conn-1", NetworkService: service, NetworkServiceEndpointName: tc.endpoint}
			_, err := chain.Close(context.Background(), conn)
			require.NoError(t, err)
			_, closes := h.take()
			require.Equal(t, []string{tc.want}, closes, "Close always reaches next")
		})
	}
}

func TestNeedsDiscover(t *testing.T) {
	chain := next.NewNetworkServiceServer(metadata.NewServer(), roundrobin.NewServer())
	_, err := chain.Request(context.Background(), request("conn-1", service))
	require.Equal(t, codes.Internal, status.Code(err))
	require.Contains(t, err.Error(), "put discover before roundrobin")
}

func TestTryEachWithNoHops(t *testing.T) {
	_, _, err := roundrobin.TryEach(context.Background(), request("conn-1", service), "test: no hop", nil, nil)
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Equal(t, "test: no hop to try", status.Convert(err).Message())
}

func BenchmarkRequest(b *testing.B) {
	chain, _ := mesh(b, map[string][]string{service: {"nse-a", "nse-b", "nse-c"}}, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := chain.Request(ctx, request("conn-1", service)); err != nil {
			b.Fatal(err)
		}
	}
}
