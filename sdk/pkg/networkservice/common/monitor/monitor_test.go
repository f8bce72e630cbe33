package monitor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// conn returns a connection at the second hop of a path client -> "mgr" -> "nse".
func conn(id, service string) *networkservice.Connection {
	return &networkservice.Connection{
		Id:             id,
		NetworkService: service,
		Path: &networkservice.Path{Index: 1, PathSegments: []*networkservice.PathSegment{
			{Name: "client", Id: "client-" + id},
			{Name: "mgr", Id: id},
			{Name: "nse", Id: "nse-" + id},
		}},
	}
}

func request(id, service string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: conn(id, service)}
}

// serve runs [begin, metadata, mon, elems...] and mon's MonitorConnection service on a unix
// socket and returns clients of both services.
func serve(t *testing.T, mon *monitor.Server, elems ...networkservice.NetworkServiceServer) (networkservice.NetworkServiceClient, networkservice.MonitorConnectionClient) {
	t.Helper()
	chain := append([]networkservice.NetworkServiceServer{begin.NewServer(), metadata.NewServer(), mon}, elems...)
	u, _ := start(t, next.NewNetworkServiceServer(chain...), mon)
	return clients(t, u)
}

// start serves chain and mon on a new unix socket and returns its URL and a function that
// stops the server (also called at cleanup).
func start(t *testing.T, chain networkservice.NetworkServiceServer, mon networkservice.MonitorConnectionServer) (*url.URL, func()) {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
	require.NoError(t, err)
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, chain)
	if mon != nil {
		networkservice.RegisterMonitorConnectionServer(srv, mon)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &url.URL{Scheme: "unix", Path: lis.Addr().String()}, srv.Stop
}

// clients returns clients of both services of the server at u.
func clients(t *testing.T, u *url.URL) (networkservice.NetworkServiceClient, networkservice.MonitorConnectionClient) {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Fixed flow-control windows (no BDP growth), so a subscriber that does not read blocks
		// its server after a known amount: 64KiB.
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return networkservice.NewNetworkServiceClient(cc), networkservice.NewMonitorConnectionClient(cc)
}

func subscribe(t *testing.T, ctx context.Context, mc networkservice.MonitorConnectionClient, sel *networkservice.MonitorScopeSelector) networkservice.MonitorConnection_MonitorConnectionsClient {
	t.Helper()
	stream, err := mc.MonitorConnections(ctx, sel)
	require.NoError(t, err)
	return stream
}

// recv returns the next event's type and connections.
func recv(t *testing.T, stream networkservice.MonitorConnection_MonitorConnectionsClient) (networkservice.ConnectionEventType, map[string]*networkservice.Connection) {
	t.Helper()
	event, err := stream.Recv()
	require.NoError(t, err)
	return event.GetType(), event.GetConnections()
}

func TestSubscriberSeesInitialStateThenUpdatesThenDelete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsc, mc := serve(t, monitor.NewServer(ctx))

	_, err := nsc.Request(ctx, request("a", "ns"))
	require.NoError(t, err)
	stream := subscribe(t, ctx, mc, &networkservice.MonitorScopeSelector{})

	kind, conns := recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Len(t, conns, 1)
	require.Equal(t, "mgr", conns["a"].GetCurrentPathSegment().GetName(), "the connection as the server holds it")

	_, err = nsc.Request(ctx, request("b", "ns"))
	require.NoError(t, err)
	kind, conns = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, kind)
	require.Contains(t, conns, "b")

	_, err = nsc.Close(ctx, conn("a", "ns"))
	require.NoError(t, err)
	kind, conns = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_DELETE, kind)
	require.Contains(t, conns, "a")

	// A late subscriber starts from what is left.
	late := subscribe(t, ctx, mc, nil)
	kind, conns = recv(t, late)
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Len(t, conns, 1)
	require.Contains(t, conns, "b")
}

func TestEmptyInitialStateTransfer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, mc := serve(t, monitor.NewServer(ctx))
	kind, conns := recv(t, subscribe(t, ctx, mc, nil))
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Empty(t, conns)
}

func TestScopeSelectorFilters(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  *networkservice.MonitorScopeSelector
		want []string // of a (ns "red"), b (ns "blue"), c (ns "red")
	}{
		{name: "empty selector sees all", sel: &networkservice.MonitorScopeSelector{}, want: []string{"a", "b", "c"}},
		{name: "by network service", sel: &networkservice.MonitorScopeSelector{NetworkServices: []string{"red"}}, want: []string{"a", "c"}},
		{name: "by the previous hop's segment", sel: &networkservice.MonitorScopeSelector{
			PathSegments: []*networkservice.PathSegment{{Name: "client", Id: "client-b"}},
		}, want: []string{"b"}},
		{name: "by two consecutive segments", sel: &networkservice.MonitorScopeSelector{
			PathSegments: []*networkservice.PathSegment{{Id: "c"}, {Name: "nse"}},
		}, want: []string{"c"}},
		{name: "service and segment must both match", sel: &networkservice.MonitorScopeSelector{
			NetworkServices: []string{"blue"},
			PathSegments:    []*networkservice.PathSegment{{Id: "client-a"}},
		}, want: nil},
		{name: "unknown segment", sel: &networkservice.MonitorScopeSelector{
			PathSegments: []*networkservice.PathSegment{{Name: "elsewhere"}},
		}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nsc, mc := serve(t, monitor.NewServer(ctx))

			// What exists when a subscriber comes arrives in INITIAL_STATE_TRANSFER ...
			for _, r := range []*networkservice.NetworkServiceRequest{request("a", "red"), request("b", "blue"), request("c", "red")} {
				_, err := nsc.Request(ctx, r)
				require.NoError(t, err)
			}
			stream := subscribe(t, ctx, mc, tc.sel)
			kind, initial := recv(t, stream)
			require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
			require.ElementsMatch(t, tc.want, keys(initial))

			// ... and what changes later comes as it happens, filtered the same way.
			for _, c := range []*networkservice.Connection{conn("a", "red"), conn("b", "blue"), conn("c", "red")} {
				_, err := nsc.Close(ctx, c)
				require.NoError(t, err)
			}
			_, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{Connection: fence(tc.sel)})
			require.NoError(t, err)
			var deleted []string
			for {
				kind, conns := recv(t, stream)
				if _, ok := conns["fence"]; ok {
					break
				}
				require.Equal(t, networkservice.ConnectionEventType_DELETE, kind)
				deleted = append(deleted, keys(conns)...)
			}
			require.Equal(t, tc.want, deleted)
		})
	}
}

// fence returns a connection that sel matches: seen on a stream, everything published before
// it has been seen too.
func fence(sel *networkservice.MonitorScopeSelector) *networkservice.Connection {
	c := &networkservice.Connection{Id: "fence", NetworkService: "any", Path: &networkservice.Path{}}
	if len(sel.GetNetworkServices()) > 0 {
		c.NetworkService = sel.GetNetworkServices()[0]
	}
	for _, seg := range sel.GetPathSegments() {
		c.Path.PathSegments = append(c.Path.PathSegments, seg.Clone())
	}
	return c
}

func keys(conns map[string]*networkservice.Connection) []string {
	var ids []string
	for id := range conns {
		ids = append(ids, id)
	}
	return ids
}

func TestFailedRequestIsNotReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fail := inject.NewServer(nil)
	nsc, mc := serve(t, monitor.NewServer(ctx), fail)
	stream := subscribe(t, ctx, mc, nil)
	_, _ = recv(t, stream)

	fail.FailRequests(status.Error(codes.Unavailable, "boom"))
	_, err := nsc.Request(ctx, request("a", "ns"))
	require.Error(t, err)
	fail.FailRequests(nil)
	_, err = nsc.Request(ctx, request("b", "ns"))
	require.NoError(t, err)

	_, conns := recv(t, stream)
	require.Len(t, conns, 1)
	require.Contains(t, conns, "b", "the failed request sent no event")
	kind, conns := recv(t, subscribe(t, ctx, mc, nil))
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.NotContains(t, conns, "a", "a failed first Request leaves nothing recorded")

	// A Close of a connection the server never reported sends nothing either.
	_, err = nsc.Close(ctx, conn("a", "ns"))
	require.NoError(t, err)
	_, err = nsc.Close(ctx, conn("b", "ns"))
	require.NoError(t, err)
	kind, conns = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_DELETE, kind)
	require.Contains(t, conns, "b")
}

func TestEventsArriveInOrderAndNoneIsLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsc, mc := serve(t, monitor.NewServer(ctx))
	stream := subscribe(t, ctx, mc, nil)
	_, _ = recv(t, stream)

	const n = monitor.DefaultQueueSize / 2
	for i := range n {
		req := request("a", "ns")
		req.Connection.Labels = map[string]string{"n": string(rune('A' + i))}
		_, err := nsc.Request(ctx, req)
		require.NoError(t, err)
	}
	for i := range n {
		_, conns := recv(t, stream)
		require.Equal(t, string(rune('A'+i)), conns["a"].GetLabels()["n"])
	}
}

func TestSlowSubscriberIsDroppedAndDoesNotBlockRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mon := monitor.NewServer(ctx, monitor.WithQueueSize(4))
	_, mc := serve(t, mon)
	chain := next.NewNetworkServiceServer(mon)

	slow := subscribe(t, ctx, mc, nil)
	_, _ = recv(t, slow)

	// 1MiB of events: far more than the 64KiB flow-control window and the queue together hold.
	done := make(chan error, 1)
	go func() {
		big := request("a", "ns")
		big.Connection.Labels = map[string]string{"pad": string(make([]byte, 1024))}
		for range 1000 {
			if _, err := chain.Request(ctx, big); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("Requests blocked behind a subscriber that does not read")
	}

	// The subscriber gets what was already on its way, then learns it was dropped.
	var err error
	for err == nil {
		_, err = slow.Recv()
	}
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "subscribe again")

	// Subscribing again works and starts from the current state.
	kind, conns := recv(t, subscribe(t, ctx, mc, nil))
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Contains(t, conns, "a")
}

func TestStreamsEndWhenServerStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	monCtx, stop := context.WithCancel(ctx)
	_, mc := serve(t, monitor.NewServer(monCtx))
	stream := subscribe(t, ctx, mc, nil)
	_, _ = recv(t, stream)

	stop()
	_, err := stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}

func TestStreamEndsWhenSubscriberLeaves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mon := monitor.NewServer(ctx)
	nsc, mc := serve(t, mon)
	subCtx, leave := context.WithCancel(ctx)
	stream := subscribe(t, subCtx, mc, nil)
	_, _ = recv(t, stream)
	leave()
	_, err := stream.Recv()
	require.Equal(t, codes.Canceled, status.Code(err))
	// The server keeps serving others; goleak (TestMain) checks the handler ended.
	_, err = nsc.Request(ctx, request("a", "ns"))
	require.NoError(t, err)
}

// sinkTaker keeps the sink of each connection it saw, by its ID there, and of the last one.
type sinkTaker struct {
	mu    sync.Mutex
	sink  func(*networkservice.Connection)
	sinks map[string]func(*networkservice.Connection)
}

func (s *sinkTaker) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s.mu.Lock()
	s.sink = monitor.Sink(ctx)
	if s.sinks == nil {
		s.sinks = map[string]func(*networkservice.Connection){}
	}
	s.sinks[req.GetConnection().GetId()] = s.sink
	s.mu.Unlock()
	return next.Server(ctx).Request(ctx, req)
}

func (s *sinkTaker) get() func(*networkservice.Connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sink
}

// of returns the sink of the connection whose path ends at this element's hop as conn's does.
func (s *sinkTaker) of(conn *networkservice.Connection) func(*networkservice.Connection) {
	segs := conn.GetPath().GetPathSegments()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinks[segs[len(segs)-1].GetId()]
}

func (s *sinkTaker) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestSinkMergesDownstreamPathAndState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Nil(t, monitor.Sink(ctx), "no server, no sink")

	taker := &sinkTaker{}
	nsc, mc := serve(t, monitor.NewServer(ctx), taker)
	_, err := nsc.Request(ctx, request("a", "ns"))
	require.NoError(t, err)
	stream := subscribe(t, ctx, mc, nil)
	_, _ = recv(t, stream)

	// The hop after "mgr" reselected: a forwarder and another endpoint, and the path is down.
	down := conn("a", "ns")
	down.Path.PathSegments = append(down.Path.PathSegments[:2:2],
		&networkservice.PathSegment{Name: "fwd", Id: "fwd-a"},
		&networkservice.PathSegment{Name: "nse-2", Id: "nse-2-a"})
	down.State = networkservice.State_DOWN
	down.Labels = map[string]string{"downstream": "only"}
	taker.get()(down)

	kind, conns := recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, kind)
	got := conns["a"]
	require.Equal(t, networkservice.State_DOWN, got.GetState())
	require.Equal(t, uint32(1), got.GetPath().GetIndex(), "the server's own place in the path")
	var names []string
	for _, seg := range got.GetPath().GetPathSegments() {
		names = append(names, seg.GetName())
	}
	require.Equal(t, []string{"client", "mgr", "fwd", "nse-2"}, names)
	require.Empty(t, got.GetLabels(), "only path and state come from downstream")

	// The same news twice is one event; after Close the sink does nothing.
	taker.get()(down)
	_, err = nsc.Close(ctx, conn("a", "ns"))
	require.NoError(t, err)
	taker.get()(down)
	kind, _ = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_DELETE, kind)
	kind, conns = recv(t, subscribe(t, ctx, mc, nil))
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Empty(t, conns)
}

func TestNewServerPanicsOnNilContext(t *testing.T) {
	require.PanicsWithValue(t, "monitor.NewServer: nil ctx", func() {
		var ctx context.Context
		monitor.NewServer(ctx)
	})
}

func TestConformance(t *testing.T) {
	for _, c := range []conformance.Case{
		{Name: "monitor server", Server: func(ctx context.Context) networkservice.NetworkServiceServer { return monitor.NewServer(ctx) }},
		{Name: "monitor client", Client: func(ctx context.Context) networkservice.NetworkServiceClient { return monitor.NewClient(ctx) }},
	} {
		c.Request = func() *networkservice.NetworkServiceRequest { return request("a", "ns") }
		conformance.Run(t, c)
	}
}

// discard is a MonitorConnections stream that drops what it is sent.
type discard struct {
	grpc.ServerStream
	ctx context.Context
}

func (d discard) Context() context.Context                   { return d.ctx }
func (d discard) Send(*networkservice.ConnectionEvent) error { return nil }

// BenchmarkRequest measures a Request passing the monitor with subscribers of other
// connections: without TLS (they see every connection, their selector skips it) and over mutual
// TLS as other clients (the connection's identities, decoded once, do not name them).
func BenchmarkRequest(b *testing.B) {
	ca, err := spiffe.NewCA(td)
	require.NoError(b, err)
	svid, err := ca.Issue(idOf("other-client"), time.Hour)
	require.NoError(b, err)
	asOther := credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: svid.Certificates}}
	for _, bc := range []struct {
		subscribers int
		secure      bool
	}{{0, false}, {100, false}, {100, true}} {
		name := fmt.Sprintf("%d subscribers of other connections", bc.subscribers)
		if bc.secure {
			name = fmt.Sprintf("%d subscribers over mutual TLS", bc.subscribers)
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			mon := monitor.NewServer(ctx)
			var wg sync.WaitGroup
			for i := range bc.subscribers {
				sel := &networkservice.MonitorScopeSelector{PathSegments: []*networkservice.PathSegment{{Id: fmt.Sprint("other-", i)}}}
				stream := discard{ctx: ctx}
				if bc.secure {
					sel, stream.ctx = nil, peer.NewContext(ctx, &peer.Peer{AuthInfo: asOther})
				}
				wg.Go(func() { _ = mon.MonitorConnections(sel, stream) })
			}
			chain := next.NewNetworkServiceServer(mon)
			req := owned("a", "client")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := chain.Request(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			cancel()
			wg.Wait()
		})
	}
}
