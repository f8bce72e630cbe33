package discover_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/registry/common/memory"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "icmp-responder"

var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// nse is an endpoint of service with labels; ttl < 0 makes it expired, 0 never expiring.
func nse(name, url string, ttl time.Duration, labels map[string]string) *registry.NetworkServiceEndpoint {
	e := &registry.NetworkServiceEndpoint{
		Name:                 name,
		Url:                  url,
		NetworkServiceNames:  []string{service},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{service: {Labels: labels}},
	}
	if ttl != 0 {
		e.ExpirationTime = timestamppb.New(now.Add(ttl))
	}
	return e
}

// Endpoints on both address families; every case below picks among them.
func endpoints() []*registry.NetworkServiceEndpoint {
	return []*registry.NetworkServiceEndpoint{
		nse("nse-a", "tcp://127.0.0.1:5001", time.Minute, map[string]string{"color": "red", "nodeName": "node-1"}),
		nse("nse-b", "tcp://[fd00::2]:5001", 0, map[string]string{"color": "blue", "nodeName": "node-2"}),
		nse("nse-c", "tcp://10.0.0.3:5001", time.Minute, map[string]string{"color": "blue", "nodeName": "node-1", "gpu": "true"}),
		nse("nse-old", "tcp://[fd00::9]:5001", -time.Second, map[string]string{"color": "red", "nodeName": "node-2"}),
	}
}

func route(weight uint32, selector map[string]string) *registry.Destination {
	return &registry.Destination{DestinationSelector: selector, Weight: weight}
}

// probe records what discover handed on.
type probe struct {
	candidates []string
	weights    []uint32
	match      *registry.Match
	ns         *registry.NetworkService
	conn       *networkservice.Connection
	closes     int
}

func (p *probe) see(ctx context.Context) {
	p.candidates, p.weights = nil, nil
	for _, e := range discover.Candidates(ctx) {
		p.candidates = append(p.candidates, e.GetName())
		p.weights = append(p.weights, discover.Weight(ctx, e.GetName()))
	}
	p.match, p.ns = discover.Match(ctx), discover.NetworkService(ctx)
}

func (p *probe) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	p.see(ctx)
	p.conn = req.GetConnection().Clone()
	return next.Server(ctx).Request(ctx, req)
}

func (p *probe) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	p.see(ctx)
	p.closes++
	return next.Server(ctx).Close(ctx, conn)
}

// registries returns stores holding ns (if not nil) and nses.
func registries(t *testing.T, ns *registry.NetworkService, nses ...*registry.NetworkServiceEndpoint) (regnext.NS, regnext.NSE) {
	t.Helper()
	nsReg, nseReg := memory.NewNS(), memory.NewNSE()
	if ns != nil {
		_, err := nsReg.Register(context.Background(), ns)
		require.NoError(t, err)
	}
	for _, e := range nses {
		_, err := nseReg.Register(context.Background(), e)
		require.NoError(t, err)
	}
	return nsReg, nseReg
}

func testContext() context.Context {
	return clock.WithClock(context.Background(), clock.NewFake(now))
}

func TestRequest(t *testing.T) {
	firewall := &registry.Match{
		SourceSelector: map[string]string{"app": "firewall"},
		Routes:         []*registry.Destination{route(0, map[string]string{"color": "red"})},
	}
	blue := &registry.Match{Routes: []*registry.Destination{route(0, map[string]string{"color": "blue"})}}
	green := &registry.Match{Routes: []*registry.Destination{route(0, map[string]string{"color": "green"})}}
	greenFallthrough := &registry.Match{Fallthrough: true, Routes: green.Routes}
	sameNode := &registry.Match{Routes: []*registry.Destination{route(0, map[string]string{"nodeName": "{{.nodeName}}"})}}
	weighted := &registry.Match{Routes: []*registry.Destination{
		route(3, map[string]string{"gpu": "true"}),
		route(1, map[string]string{"color": "blue"}),
		route(0, map[string]string{"color": "red"}),
	}}
	metadataOnly := &registry.Match{Metadata: &registry.Metadata{Labels: map[string]string{"p2mp": "true"}}}
	ownColor := &registry.Match{
		SourceSelector: map[string]string{"color": "{{.app}}"},
		Routes:         []*registry.Destination{route(0, map[string]string{"color": "red"})},
	}

	for _, tc := range []struct {
		name    string
		matches []*registry.Match
		payload string // the service's
		conn    *networkservice.Connection
		// want
		candidates []string
		weights    []uint32
		match      *registry.Match
		payloadSet string
		code       codes.Code
		message    string
	}{
		{
			name:       "no matches: every live endpoint",
			payload:    "IP",
			conn:       &networkservice.Connection{Id: "c", NetworkService: service},
			candidates: []string{"nse-a", "nse-b", "nse-c"},
			weights:    []uint32{1, 1, 1},
			payloadSet: "IP",
		},
		{
			name:       "source selector applies",
			matches:    []*registry.Match{firewall, blue},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "firewall", "x": "y"}},
			candidates: []string{"nse-a"},
			match:      firewall,
		},
		{
			name:       "source selector does not apply: the next match decides",
			matches:    []*registry.Match{firewall, blue},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "web"}},
			candidates: []string{"nse-b", "nse-c"},
			match:      blue,
		},
		{
			name:    "no match applies",
			matches: []*registry.Match{firewall},
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "web"}},
			code:    codes.NotFound,
			message: `discover: no endpoint of network service "icmp-responder" fits client labels {app=web}: match 1 needs client labels {app=firewall}; no match applies; ` +
				`endpoints: nse-a {color=red, nodeName=node-1}, nse-b {color=blue, nodeName=node-2}, nse-c {color=blue, gpu=true, nodeName=node-1}`,
		},
		{
			name:       "a match that selects nothing falls through",
			matches:    []*registry.Match{greenFallthrough, blue},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service},
			candidates: []string{"nse-b", "nse-c"},
			match:      blue,
		},
		{
			name:    "the last match falls through",
			matches: []*registry.Match{firewall, greenFallthrough},
			conn:    &networkservice.Connection{Id: "c", NetworkService: service},
			code:    codes.NotFound,
			message: `match 1 needs client labels {app=firewall}; match 2 selects no endpoint by routes {color=green} and falls through; no match is left; endpoints: `,
		},
		{
			name:    "a match that selects nothing without fallthrough ends the search",
			matches: []*registry.Match{greenFallthrough, green, blue},
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "web"}},
			code:    codes.NotFound,
			message: `discover: no endpoint of network service "icmp-responder" fits client labels {app=web}: ` +
				`match 1 selects no endpoint by routes {color=green} and falls through; match 2 selects no endpoint by routes {color=green}; endpoints: `,
		},
		{
			name:       "template over the client's labels",
			matches:    []*registry.Match{sameNode},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"nodeName": "node-2"}},
			candidates: []string{"nse-b"},
			match:      sameNode,
		},
		{
			name:    "template naming a label the client lacks selects nothing",
			matches: []*registry.Match{sameNode},
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "web"}},
			code:    codes.NotFound,
			message: "match 1 selects no endpoint by routes {nodeName={{.nodeName}}}",
		},
		{
			name:       "template in a source selector",
			matches:    []*registry.Match{ownColor, blue},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service, Labels: map[string]string{"app": "web", "color": "web"}},
			candidates: []string{"nse-a"},
			match:      ownColor,
		},
		{
			name:       "routes in order, each endpoint once, with its first route's weight",
			matches:    []*registry.Match{weighted},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service},
			candidates: []string{"nse-c", "nse-b", "nse-a"},
			weights:    []uint32{3, 1, 1},
			match:      weighted,
		},
		{
			name:       "a match with metadata and no routes selects every endpoint",
			matches:    []*registry.Match{metadataOnly},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service},
			candidates: []string{"nse-a", "nse-b", "nse-c"},
			match:      metadataOnly,
		},
		{
			name:    "unknown service",
			conn:    &networkservice.Connection{Id: "c", NetworkService: "nope"},
			code:    codes.NotFound,
			message: `discover: network service "nope" not found; register it, or check the name`,
		},
		{
			name:    "no service named",
			conn:    &networkservice.Connection{Id: "c"},
			code:    codes.InvalidArgument,
			message: "discover: the connection names no network service; set connection.network_service",
		},
		{
			name:    "payload the service does not carry",
			payload: "IP",
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, Payload: "ETHERNET"},
			code:    codes.NotFound,
			message: `discover: network service "icmp-responder" carries payload IP, the connection asks for ETHERNET`,
		},
		{
			name:       "named endpoint: only it, with the match that selects it",
			matches:    []*registry.Match{firewall, blue},
			conn:       &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-c"},
			candidates: []string{"nse-c"},
			match:      blue,
		},
		{
			name:    "named endpoint gone",
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-x"},
			code:    codes.NotFound,
			message: `discover: endpoint "nse-x" of connection "c" is no longer registered; ask for a new one (heal does, with state RESELECT_REQUESTED)`,
		},
		{
			name:    "named endpoint expired",
			conn:    &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-old"},
			code:    codes.NotFound,
			message: `discover: endpoint "nse-old" of connection "c" expired at 2025-12-31T23:59:59Z`,
		},
		{
			name: "reselect drops the endpoint's name",
			conn: &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-x",
				State: networkservice.State_RESELECT_REQUESTED},
			candidates: []string{"nse-a", "nse-b", "nse-c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := &registry.NetworkService{Name: service, Payload: tc.payload, Matches: tc.matches}
			p := &probe{}
			chain := next.NewNetworkServiceServer(discover.NewServer(registries(t, ns, endpoints()...)), p)

			_, err := chain.Request(testContext(), &networkservice.NetworkServiceRequest{Connection: tc.conn})
			if tc.code != codes.OK {
				require.Error(t, err)
				require.Equal(t, tc.code, status.Code(err), err)
				require.Contains(t, status.Convert(err).Message(), tc.message)
				require.Nil(t, p.conn, "a failed discovery does not call next")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.candidates, p.candidates)
			if tc.weights != nil {
				require.Equal(t, tc.weights, p.weights)
			}
			require.True(t, proto.Equal(tc.match, p.match), "match: want %v, got %v", tc.match, p.match)
			require.Equal(t, service, p.ns.GetName())
			require.Equal(t, tc.payloadSet, p.conn.GetPayload())
			if tc.conn.GetState() == networkservice.State_RESELECT_REQUESTED {
				require.Empty(t, p.conn.GetNetworkServiceEndpointName())
			}
		})
	}
}

// down is a registry that cannot be reached.
type down[R regnext.Record] struct{}

var errDown = status.Error(codes.Unavailable, "registry down")

func (down[R]) Register(context.Context, R) (R, error) {
	var zero R
	return zero, errDown
}

func (down[R]) Find(context.Context, *regnext.Query[R], func(*regnext.Event[R]) error) error {
	return errDown
}

func (down[R]) Unregister(context.Context, R) error { return errDown }

func TestRegistryErrorsKeepTheirCode(t *testing.T) {
	nsReg, nseReg := registries(t, &registry.NetworkService{Name: service}, endpoints()...)
	for _, tc := range []struct {
		name    string
		server  networkservice.NetworkServiceServer
		conn    *networkservice.Connection
		message string
	}{
		{"service", discover.NewServer(down[*registry.NetworkService]{}, nseReg),
			&networkservice.Connection{Id: "c", NetworkService: service},
			`discover: find network service "icmp-responder": registry down`},
		{"endpoints", discover.NewServer(nsReg, down[*registry.NetworkServiceEndpoint]{}),
			&networkservice.Connection{Id: "c", NetworkService: service},
			`discover: find endpoints of "icmp-responder": registry down`},
		{"named endpoint", discover.NewServer(nsReg, down[*registry.NetworkServiceEndpoint]{}),
			&networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-a"},
			`discover: find endpoint "nse-a": registry down`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.server.Request(testContext(), &networkservice.NetworkServiceRequest{Connection: tc.conn})
			require.Equal(t, codes.Unavailable, status.Code(err), err)
			require.Equal(t, tc.message, status.Convert(err).Message())
		})
	}
}

func TestNamedEndpointOutlivesItsService(t *testing.T) {
	p := &probe{}
	chain := next.NewNetworkServiceServer(discover.NewServer(registries(t, nil, endpoints()...)), p)
	conn := &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: "nse-b", Payload: "IP"}
	_, err := chain.Request(testContext(), &networkservice.NetworkServiceRequest{Connection: conn})
	require.NoError(t, err)
	require.Equal(t, []string{"nse-b"}, p.candidates)
	require.Nil(t, p.ns)
	require.Nil(t, p.match)
	require.Equal(t, "IP", p.conn.GetPayload())
}

func TestCloseFindsTheNamedEndpoint(t *testing.T) {
	nsReg, nseReg := registries(t, &registry.NetworkService{Name: service}, endpoints()...)
	for _, tc := range []struct {
		name       string
		nse        regnext.NSE
		endpoint   string
		candidates []string
	}{
		{"named", nseReg, "nse-b", []string{"nse-b"}},
		{"expired endpoints are still closed", nseReg, "nse-old", []string{"nse-old"}},
		{"gone", nseReg, "nse-x", nil},
		{"none named", nseReg, "", nil},
		{"registry down", down[*registry.NetworkServiceEndpoint]{}, "nse-b", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &probe{}
			chain := next.NewNetworkServiceServer(discover.NewServer(nsReg, tc.nse), p)
			conn := &networkservice.Connection{Id: "c", NetworkService: service, NetworkServiceEndpointName: tc.endpoint}
			_, err := chain.Close(testContext(), conn)
			require.NoError(t, err)
			require.Equal(t, 1, p.closes, "Close always reaches next")
			require.Equal(t, tc.candidates, p.candidates)
			require.Nil(t, p.match)
		})
	}
}

func TestEndpointsSkipsExpired(t *testing.T) {
	_, nseReg := registries(t, nil, endpoints()...)
	other := nse("nse-other", "tcp://10.0.0.4:5001", 0, nil)
	other.NetworkServiceNames = []string{"other"}
	_, err := nseReg.Register(context.Background(), other)
	require.NoError(t, err)

	nses, err := discover.Endpoints(testContext(), nseReg, service)
	require.NoError(t, err)
	var names []string
	for _, e := range nses {
		names = append(names, e.GetName())
	}
	require.Equal(t, []string{"nse-a", "nse-b", "nse-c"}, names)

	fake := clock.NewFake(now.Add(time.Hour))
	nses, err = discover.Endpoints(clock.WithClock(context.Background(), fake), nseReg, service)
	require.NoError(t, err)
	require.Len(t, nses, 1, "an hour later only the endpoint without expiration time is left")
}

func TestExpandAndSelects(t *testing.T) {
	client := map[string]string{"app": "web", "nodeName": "node-1", "node-name": "n-1"}
	for _, tc := range []struct {
		name     string
		selector map[string]string
		want     map[string]string
	}{
		{"no template", map[string]string{"a": "b"}, map[string]string{"a": "b"}},
		{"template", map[string]string{"node": "{{.nodeName}}", "x": "y"}, map[string]string{"node": "node-1", "x": "y"}},
		{"template in text", map[string]string{"name": "{{.app}}-gw"}, map[string]string{"name": "web-gw"}},
		{"missing label stays", map[string]string{"zone": "{{.zone}}"}, map[string]string{"zone": "{{.zone}}"}},
		{"bad template stays", map[string]string{"a": "{{.app"}, map[string]string{"a": "{{.app"}},
		{"index for other keys", map[string]string{"a": `{{index . "node-name"}}`}, map[string]string{"a": "n-1"}},
		{"functions stay", map[string]string{"a": `{{printf "%099d" 1}}`}, map[string]string{"a": `{{printf "%099d" 1}}`}},
		{"loops stay", map[string]string{"a": "{{range .}}{{.}}{{end}}"}, map[string]string{"a": "{{range .}}{{.}}{{end}}"}},
		{"variables stay", map[string]string{"a": "{{$x := .app}}{{$x}}"}, map[string]string{"a": "{{$x := .app}}{{$x}}"}},
		{"pipelines stay", map[string]string{"a": "{{.app | len}}"}, map[string]string{"a": "{{.app | len}}"}},
		{"nested fields stay", map[string]string{"a": "{{.app.x}}"}, map[string]string{"a": "{{.app.x}}"}},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, discover.Expand(tc.selector, client))
		})
	}
	template := map[string]string{"node": "{{.nodeName}}"}
	discover.Expand(template, client)
	require.Equal(t, "{{.nodeName}}", template["node"], "Expand leaves the selector as it was")

	for _, tc := range []struct {
		selector, labels map[string]string
		want             bool
	}{
		{nil, nil, true},
		{nil, map[string]string{"a": "1"}, true},
		{map[string]string{"a": "1"}, map[string]string{"a": "1", "b": "2"}, true},
		{map[string]string{"a": "1"}, map[string]string{"a": "2"}, false},
		{map[string]string{"a": ""}, nil, false},
		{map[string]string{"a": "1", "b": "2"}, map[string]string{"a": "1"}, false},
	} {
		require.Equal(t, tc.want, discover.Selects(tc.selector, tc.labels), "%v in %v", tc.selector, tc.labels)
	}
	require.Equal(t, "{a=1, b=, c=x y}", discover.FormatLabels(map[string]string{"c": "x y", "a": "1", "b": ""}))
	require.Equal(t, "{}", discover.FormatLabels(nil))
}

func TestNewServerNeedsRegistries(t *testing.T) {
	require.Panics(t, func() { discover.NewServer(nil, memory.NewNSE()) })
	require.Panics(t, func() { discover.NewServer(memory.NewNS(), nil) })
}

// Selector values come from whoever registers a network service: Expand must never panic,
// and leaves values without a template as they are.
func FuzzExpand(f *testing.F) {
	for _, seed := range []string{"{{.app}}", "plain", "{{", "{{.app", "{{index . \"a-b\"}}", "{{range .}}{{.}}{{end}}", "{{template \"x\"}}", "{{call .app}}"} {
		f.Add(seed, "web")
	}
	f.Fuzz(func(t *testing.T, value, app string) {
		got := discover.Expand(map[string]string{"k": value, "fixed": "v"}, map[string]string{"app": app, "a-b": "c"})
		require.Equal(t, "v", got["fixed"])
		require.Len(t, got, 2)
	})
}
