package discoverforwarder_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/discoverforwarder"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/registry/common/memory"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	service  = "icmp-responder"
	nseURL   = "tcp://127.0.0.1:5001"
	fwdAURL  = "tcp://127.0.0.1:5101"
	fwdBURL  = "tcp://[::1]:5102"
	fwdCURL  = "tcp://[fd00::3]:5103"
	nsmgrURL = "unix:///var/lib/networkservicemesh/nsm.io.sock"
)

func forwarder(name, url, svc string, labels map[string]string) *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{
		Name:                 name,
		Url:                  url,
		NetworkServiceNames:  []string{svc},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{svc: {Labels: labels}},
	}
}

// forwarders on two nodes: fwd-a and fwd-b on node-1, fwd-c on node-2.
func forwarders() []*registry.NetworkServiceEndpoint {
	return []*registry.NetworkServiceEndpoint{
		forwarder("fwd-a", fwdAURL, "forwarder", map[string]string{"p2mp": "true", "zone": "z1", "nodeName": "node-1"}),
		forwarder("fwd-b", fwdBURL, "forwarder", map[string]string{"p2p": "true", "zone": "z2", "nodeName": "node-1"}),
		forwarder("fwd-c", fwdCURL, "forwarder", map[string]string{"p2p": "true", "nodeName": "node-2"}),
	}
}

// hops stands in for the forwarders: it fails Requests sent to the URLs in fail, and records
// each Request that reached it as "endpoint@url" and the URL of each Close.
type hops struct {
	mu       sync.Mutex
	fail     map[string]error
	requests []string
	closes   []string
}

func urlOf(ctx context.Context) string {
	if u := clienturl.ClientURL(ctx); u != nil {
		return u.String()
	}
	return "<nil>"
}

func (h *hops) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.fail[urlOf(ctx)]; err != nil {
		return nil, err
	}
	h.requests = append(h.requests, req.GetConnection().GetNetworkServiceEndpointName()+"@"+urlOf(ctx))
	return next.Server(ctx).Request(ctx, req)
}

func (h *hops) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closes = append(h.closes, urlOf(ctx))
	return next.Server(ctx).Close(ctx, conn)
}

func (h *hops) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.requests) == 0 {
		return ""
	}
	return h.requests[len(h.requests)-1]
}

type nsmgr struct {
	chain  networkservice.NetworkServiceServer
	hops   *hops
	nseReg regnext.NSE
}

// newNSMgr returns an nsmgr's selection chain [metadata, discover, roundrobin,
// discoverforwarder, hops] over a registry holding the service with matches, its endpoint
// nse-a, and fwds.
func newNSMgr(t *testing.T, matches []*registry.Match, fwds []*registry.NetworkServiceEndpoint, opts ...discoverforwarder.Option) *nsmgr {
	t.Helper()
	ctx := context.Background()
	nsReg, nseReg := memory.NewNS(), memory.NewNSE()
	_, err := nsReg.Register(ctx, &registry.NetworkService{Name: service, Payload: "IP", Matches: matches})
	require.NoError(t, err)
	for _, e := range append(fwds, forwarder("nse-a", nseURL, service, nil)) {
		_, err := nseReg.Register(ctx, e)
		require.NoError(t, err)
	}
	h := &hops{fail: map[string]error{}}
	chain := next.NewNetworkServiceServer(metadata.NewServer(), discover.NewServer(nsReg, nseReg), roundrobin.NewServer(),
		discoverforwarder.NewServer(nseReg, opts...), h)
	return &nsmgr{chain: chain, hops: h, nseReg: nseReg}
}

func request(labels map[string]string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: service, Labels: labels}}
}

func TestPicksAForwarderThatFits(t *testing.T) {
	withMetadata := func(labels map[string]string) []*registry.Match {
		return []*registry.Match{{Metadata: &registry.Metadata{Labels: labels}}}
	}
	for _, tc := range []struct {
		name    string
		matches []*registry.Match
		fwds    []*registry.NetworkServiceEndpoint
		opts    []discoverforwarder.Option
		labels  map[string]string // the client's
		want    string            // URL of the forwarder
		message string            // of the NotFound error when want is ""
	}{
		{
			name: "no match: any forwarder",
			want: fwdAURL,
		},
		{
			name:    "a match without metadata labels asks for p2p=true",
			matches: []*registry.Match{{Routes: []*registry.Destination{{}}}},
			want:    fwdBURL,
		},
		{
			name:    "match labels",
			matches: withMetadata(map[string]string{"p2mp": "true"}),
			want:    fwdAURL,
		},
		{
			name:    "templates over the client's labels",
			matches: withMetadata(map[string]string{"zone": "{{.zone}}"}),
			labels:  map[string]string{"zone": "z2"},
			want:    fwdBURL,
		},
		{
			name: "the match that applies to the client",
			matches: []*registry.Match{
				{SourceSelector: map[string]string{"app": "db"}, Metadata: &registry.Metadata{Labels: map[string]string{"p2mp": "true"}}},
				{Metadata: &registry.Metadata{Labels: map[string]string{"zone": "z2"}}},
			},
			labels: map[string]string{"app": "web"},
			want:   fwdBURL,
		},
		{
			name: "only this node's",
			opts: []discoverforwarder.Option{discoverforwarder.WithNodeName("node-2")},
			want: fwdCURL,
		},
		{
			name: "an expired forwarder is not used",
			fwds: func() []*registry.NetworkServiceEndpoint {
				fwds := forwarders()
				fwds[0].ExpirationTime = timestamppb.New(time.Now().Add(-time.Minute))
				return fwds
			}(),
			want: fwdBURL,
		},
		{
			name: "another forwarder service",
			fwds: []*registry.NetworkServiceEndpoint{forwarder("fwd-x", fwdBURL, "xconnect", nil)},
			opts: []discoverforwarder.Option{discoverforwarder.WithForwarderServiceName("xconnect")},
			want: fwdBURL,
		},
		{
			name:    "none fits",
			matches: withMetadata(map[string]string{"p2mp": "true"}),
			fwds: []*registry.NetworkServiceEndpoint{
				forwarder("fwd-a", fwdAURL, "forwarder", map[string]string{"p2p": "true"}),
				forwarder("fwd-b", fwdBURL, "forwarder", nil),
			},
			message: `discoverforwarder: no forwarder on this node fits match labels {p2mp=true}: fwd-a has {p2p=true}, fwd-b has {}`,
		},
		{
			name:    "none on this node",
			opts:    []discoverforwarder.Option{discoverforwarder.WithNodeName("node-9")},
			message: `discoverforwarder: no forwarder is registered for service "forwarder" on node "node-9"; is the forwarder running and registered?`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fwds := tc.fwds
			if fwds == nil {
				fwds = forwarders()
			}
			m := newNSMgr(t, tc.matches, fwds, tc.opts...)
			_, err := m.chain.Request(context.Background(), request(tc.labels))
			if tc.want == "" {
				require.Equal(t, codes.NotFound, status.Code(err), err)
				require.Equal(t, `roundrobin: no endpoint of "icmp-responder" accepted the request; tried nse-a (tcp://127.0.0.1:5001): NotFound: `+tc.message,
					status.Convert(err).Message(), "the error says which hop failed; roundrobin does not retry a NotFound")
				return
			}
			require.NoError(t, err)
			require.Equal(t, "nse-a@"+tc.want, m.hops.last(), "the request names the endpoint and goes to the forwarder")
		})
	}
}

func TestFailover(t *testing.T) {
	m := newNSMgr(t, nil, forwarders())
	m.hops.fail[fwdAURL] = status.Error(codes.Unavailable, "connection refused")
	_, err := m.chain.Request(context.Background(), request(nil))
	require.NoError(t, err)
	require.Equal(t, "nse-a@"+fwdBURL, m.hops.last())

	m.hops.fail[fwdBURL] = status.Error(codes.Unavailable, "connection refused")
	m.hops.fail[fwdCURL] = status.Error(codes.Unavailable, "connection refused")
	req := request(nil)
	req.Connection.Id = "conn-2"
	_, err = m.chain.Request(context.Background(), req)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, status.Convert(err).Message(),
		`nse-a (tcp://127.0.0.1:5001): Unavailable: discoverforwarder: no forwarder on this node accepted the request; tried `+
			`fwd-a (tcp://127.0.0.1:5101): Unavailable: connection refused; fwd-b (tcp://[::1]:5102): Unavailable: connection refused; `+
			`fwd-c (tcp://[fd00::3]:5103): Unavailable: connection refused`)
}

func TestRefreshSticksToItsForwarder(t *testing.T) {
	ctx := context.Background()
	m := newNSMgr(t, nil, forwarders()[:2])
	down := status.Error(codes.Unavailable, "connection refused")
	ask := func(state networkservice.State) error {
		req := request(nil)
		req.Connection.NetworkServiceEndpointName = "nse-a"
		req.Connection.State = state
		_, err := m.chain.Request(ctx, req)
		return err
	}

	m.hops.fail[fwdAURL] = down
	require.NoError(t, ask(networkservice.State_UP))
	require.Equal(t, "nse-a@"+fwdBURL, m.hops.last())
	delete(m.hops.fail, fwdAURL)

	require.NoError(t, ask(networkservice.State_UP))
	require.Equal(t, "nse-a@"+fwdBURL, m.hops.last(), "a refresh goes to the forwarder it had")

	fwdB := forwarders()[1]
	require.NoError(t, m.nseReg.Unregister(ctx, fwdB))
	require.NoError(t, ask(networkservice.State_UP))
	require.Equal(t, "nse-a@"+fwdAURL, m.hops.last(), "its forwarder gone, a refresh takes another")

	_, err := m.nseReg.Register(ctx, fwdB)
	require.NoError(t, err)
	require.NoError(t, ask(networkservice.State_UP))
	require.Equal(t, "nse-a@"+fwdAURL, m.hops.last())

	require.NoError(t, ask(networkservice.State_RESELECT_REQUESTED))
	require.Equal(t, "nse-a@"+fwdBURL, m.hops.last(), "a reselect tries its forwarder last")

	m.hops.fail[fwdAURL], m.hops.fail[fwdBURL] = down, down
	require.Error(t, ask(networkservice.State_UP))
	clear(m.hops.fail)
	require.NoError(t, ask(networkservice.State_UP))
	require.Equal(t, "nse-a@"+fwdAURL, m.hops.last(), "after a failed refresh, another forwarder goes first")

	_, err = m.chain.Close(ctx, &networkservice.Connection{Id: "conn-1", NetworkService: service, NetworkServiceEndpointName: "nse-a"})
	require.NoError(t, err)
	require.Equal(t, []string{fwdAURL}, m.hops.closes)
}

// afterRestart is a connection the nsmgr (path index 1) made before it restarted.
func afterRestart(fwd string) *networkservice.Connection {
	return &networkservice.Connection{
		Id:                         "conn-1",
		NetworkService:             service,
		NetworkServiceEndpointName: "nse-a",
		Path: &networkservice.Path{Index: 1, PathSegments: []*networkservice.PathSegment{
			{Name: "nsc", Id: "c0"}, {Name: "nsmgr", Id: "conn-1"}, {Name: fwd, Id: "f1"}, {Name: "nse-a", Id: "e1"},
		}},
	}
}

func TestAfterRestartThePathNamesTheForwarder(t *testing.T) {
	m := newNSMgr(t, nil, forwarders()[:2])
	_, err := m.chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: afterRestart("fwd-b")})
	require.NoError(t, err)
	require.Equal(t, "nse-a@"+fwdBURL, m.hops.last())

	for _, tc := range []struct{ fwd, want string }{
		{"fwd-b", fwdBURL},
		{"fwd-gone", nseURL}, // as roundrobin set it
	} {
		m := newNSMgr(t, nil, forwarders()[:2])
		_, err := m.chain.Close(context.Background(), afterRestart(tc.fwd))
		require.NoError(t, err)
		require.Equal(t, []string{tc.want}, m.hops.closes, "Close goes to the path's forwarder, and always reaches next")
	}
}

func TestRegistryDown(t *testing.T) {
	chain := next.NewNetworkServiceServer(metadata.NewServer(), discoverforwarder.NewServer(down{}))
	_, err := chain.Request(context.Background(), request(nil))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, `discoverforwarder: find forwarders (service "forwarder"): registry down`, status.Convert(err).Message())

	h := &hops{}
	chain = next.NewNetworkServiceServer(metadata.NewServer(), discoverforwarder.NewServer(down{}), h)
	_, err = chain.Close(context.Background(), afterRestart("fwd-a"))
	require.NoError(t, err)
	require.Equal(t, []string{"<nil>"}, h.closes)
}

type down struct{}

func (down) Register(context.Context, *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, error) {
	return nil, status.Error(codes.Unavailable, "registry down")
}

func (down) Find(context.Context, *regnext.Query[*registry.NetworkServiceEndpoint], func(*regnext.Event[*registry.NetworkServiceEndpoint]) error) error {
	return status.Error(codes.Unavailable, "registry down")
}

func (down) Unregister(context.Context, *registry.NetworkServiceEndpoint) error {
	return status.Error(codes.Unavailable, "registry down")
}

func TestOptions(t *testing.T) {
	require.Panics(t, func() { discoverforwarder.NewServer(nil) })
	require.Panics(t, func() { discoverforwarder.WithForwarderServiceName("") })
}

// TestRestartedBeforeItsForwarders: an nsmgr that restarted gets a refresh before the forwarder
// the path names has registered with it again. The failure says a hop is away, so that heal
// tries the same path again; a forwarder that is registered but does not fit is no such case.
func TestRestartedBeforeItsForwarders(t *testing.T) {
	m := newNSMgr(t, nil, nil)
	_, err := m.chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: afterRestart("fwd-b")})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.True(t, dial.HopAway(err), "%v", err)

	m = newNSMgr(t, []*registry.Match{{Metadata: &registry.Metadata{Labels: map[string]string{"p2mp": "true"}}}}, forwarders()[1:2])
	_, err = m.chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: afterRestart("fwd-b")})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.False(t, dial.HopAway(err), "fwd-b is registered and does not fit: %v", err)
}
