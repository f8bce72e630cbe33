package dial_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// transports counts the gRPC transports a server accepted and saw closed.
type transports struct {
	begun, ended atomic.Int32
	end          chan struct{}
}

func (*transports) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (*transports) HandleRPC(context.Context, stats.RPCStats)                         {}
func (*transports) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (tr *transports) HandleConn(_ context.Context, s stats.ConnStats) {
	switch s.(type) {
	case *stats.ConnBegin:
		tr.begun.Add(1)
	case *stats.ConnEnd:
		tr.ended.Add(1)
		tr.end <- struct{}{}
	}
}

// hop is a next hop served over real gRPC: fail -> rec.
type hop struct {
	url  *url.URL
	rec  *checks.Recorder
	fail *inject.Errors
	tr   *transports
}

func startHop(t *testing.T, u *url.URL) *hop {
	t.Helper()
	ln, err := hopurl.Listen(u)
	require.NoError(t, err)
	h := &hop{url: hopurl.FromAddr(ln.Addr()), rec: checks.NewServer(), fail: inject.NewServer(nil), tr: &transports{end: make(chan struct{}, 100)}}
	srv := grpc.NewServer(grpc.StatsHandler(h.tr))
	networkservice.RegisterNetworkServiceServer(srv, chain.NewNetworkServiceServer(h.fail, h.rec))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return h
}

// waitEnd waits until the hop has seen n transports close.
func (h *hop) waitEnd(t *testing.T, n int32) {
	t.Helper()
	for h.tr.ended.Load() < n {
		select {
		case <-h.tr.end:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: %d transports closed, want %d", h.url, h.tr.ended.Load(), n)
		}
	}
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func unixURL(t *testing.T, name string) *url.URL {
	return &url.URL{Scheme: "unix", Path: filepath.Join(tempDir(t), name)}
}

func tcpURL(host string) *url.URL { return &url.URL{Scheme: "tcp", Host: host + ":0"} }

// listeners are the three ways hops are reached: a unix socket, IPv4 and IPv6 loopback.
var listeners = []struct {
	name string
	url  func(t *testing.T) *url.URL
}{
	{name: "unix", url: func(t *testing.T) *url.URL { return unixURL(t, "nse.sock") }},
	{name: "tcp4", url: func(*testing.T) *url.URL { return tcpURL("127.0.0.1") }},
	{name: "tcp6", url: func(*testing.T) *url.URL { return tcpURL("[::1]") }},
}

// newClient returns a client chain begin -> metadata -> dial -> connect, closed with the test;
// unless opts say otherwise, a connection to a hop closes with its last user.
func newClient(t *testing.T, opts ...dial.Option) networkservice.NetworkServiceClient {
	return newClientAt(t, context.Background(), opts...)
}

func newClientAt(t *testing.T, parent context.Context, opts ...dial.Option) networkservice.NetworkServiceClient {
	ctx, cancel := context.WithCancel(parent)
	t.Cleanup(cancel)
	return chain.NewNetworkServiceClient(
		begin.NewClient(),
		metadata.NewClient(),
		dial.NewClient(ctx, append([]dial.Option{dial.WithIdleTimeout(0)}, opts...)...),
		connect.NewClient(),
	)
}

func to(u *url.URL) context.Context { return clienturl.WithClientURL(context.Background(), u) }

func req(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}
}

func TestConnectionsShareOneClientConn(t *testing.T) {
	for _, l := range listeners {
		t.Run(l.name, func(t *testing.T) {
			h := startHop(t, l.url(t))
			c := newClient(t)

			c1, err := c.Request(to(h.url), req("c1"))
			require.NoError(t, err)
			c2, err := c.Request(to(h.url), req("c2"))
			require.NoError(t, err)
			_, err = c.Request(to(h.url), &networkservice.NetworkServiceRequest{Connection: c1}) // refresh
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"c1", "c2"}, h.rec.Open())
			require.Equal(t, int32(1), h.tr.begun.Load(), "one transport for both connections")

			_, err = c.Close(to(h.url), c1)
			require.NoError(t, err)
			c3, err := c.Request(to(h.url), req("c3"))
			require.NoError(t, err)
			require.Equal(t, int32(1), h.tr.begun.Load(), "still open while c2 uses it")
			require.Equal(t, int32(0), h.tr.ended.Load())

			_, err = c.Close(to(h.url), c2)
			require.NoError(t, err)
			_, err = c.Close(to(h.url), c3)
			require.NoError(t, err)
			h.waitEnd(t, 1)
			require.Empty(t, h.rec.Open())

			// The next connection dials again.
			c4, err := c.Request(to(h.url), req("c4"))
			require.NoError(t, err)
			require.Equal(t, int32(2), h.tr.begun.Load())
			_, err = c.Close(to(h.url), c4)
			require.NoError(t, err)
			h.waitEnd(t, 2)
		})
	}
}

func TestIdleConnectionLingers(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := startHop(t, unixURL(t, "nse.sock"))
	c := newClientAt(t, clock.WithClock(context.Background(), fake), dial.WithIdleTimeout(time.Minute))

	conn, err := c.Request(to(h.url), req("c1"))
	require.NoError(t, err)
	_, err = c.Close(to(h.url), conn)
	require.NoError(t, err)
	fake.Advance(59 * time.Second)
	conn, err = c.Request(to(h.url), req("c2"))
	require.NoError(t, err)
	require.Equal(t, int32(1), h.tr.begun.Load(), "a user within the idle time reuses the connection")
	require.Equal(t, int32(0), h.tr.ended.Load())

	_, err = c.Close(to(h.url), conn)
	require.NoError(t, err)
	fake.Advance(time.Minute)
	h.waitEnd(t, 1)
}

func TestFailedFirstRequestDropsReference(t *testing.T) {
	h := startHop(t, unixURL(t, "nse.sock"))
	c := newClient(t)
	h.fail.FailRequests(status.Error(codes.PermissionDenied, "authorize: no policy allows this"))

	_, err := c.Request(to(h.url), req("c1"))
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	h.waitEnd(t, 1) // the only reference went with the failed Request

	h.fail.FailRequests(nil)
	conn, err := c.Request(to(h.url), req("c1"))
	require.NoError(t, err)
	// A failed refresh keeps the reference: the connection is still open at the hop.
	h.fail.FailRequests(status.Error(codes.Internal, "refresh failed"))
	_, err = c.Request(to(h.url), &networkservice.NetworkServiceRequest{Connection: conn})
	require.Equal(t, codes.Internal, status.Code(err))
	require.Equal(t, int32(1), h.tr.ended.Load())
	_, err = c.Close(to(h.url), conn)
	require.NoError(t, err)
	h.waitEnd(t, 2)
}

func TestBadURL(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		wantMsg string
	}{
		{name: "no URL", ctx: context.Background(), wantMsg: "dial: no client URL in the context; put clienturl.NewClient or the discovery element before dial"},
		{name: "http", ctx: to(&url.URL{Scheme: "http", Host: "127.0.0.1:80"}), wantMsg: `dial: hopurl: next-hop URL "http://127.0.0.1:80": scheme "http" is not supported; use unix:///path/to/socket or tcp://host:port`},
		{name: "unix with two slashes", ctx: to(&url.URL{Scheme: "unix", Host: "var", Path: "/run/nsm.sock"}), wantMsg: `has host "var"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t)
			_, err := c.Request(tt.ctx, req("c1"))
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), tt.wantMsg)
		})
	}
}

func TestDialTimeout(t *testing.T) {
	for _, l := range listeners {
		t.Run(l.name, func(t *testing.T) {
			// A listener that never accepts: the kernel takes the connection, nobody speaks gRPC.
			ln, err := hopurl.Listen(l.url(t))
			require.NoError(t, err)
			t.Cleanup(func() { _ = ln.Close() })
			u := hopurl.FromAddr(ln.Addr())

			fake := clock.NewFake(time.Now())
			c := newClient(t, dial.WithDialTimeout(time.Second))
			errs := make(chan error, 1)
			go func() {
				_, err := c.Request(clock.WithClock(to(u), fake), req("c1"))
				errs <- err
			}()
			require.Eventually(t, func() bool { return fake.Pending() == 1 }, 10*time.Second, time.Millisecond)
			fake.Advance(time.Second)
			err = <-errs
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), u.String()+" did not accept a connection within 1s")
			require.ErrorIs(t, err, dial.ErrUnreachable)
		})
	}
}

// TestUnreachableIsMarked: heal tells a next hop that is not there (its socket gone, a port
// nobody listens on) from a next hop that answers Unavailable itself.
func TestUnreachableIsMarked(t *testing.T) {
	for _, l := range listeners {
		t.Run(l.name, func(t *testing.T) {
			ln, err := hopurl.Listen(l.url(t))
			require.NoError(t, err)
			u := hopurl.FromAddr(ln.Addr())
			require.NoError(t, ln.Close()) // nothing listens there any more
			c := newClient(t)
			_, err = c.Request(to(u), req("c1"))
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.ErrorIs(t, err, dial.ErrUnreachable)

			h := startHop(t, l.url(t))
			h.fail.FailRequests(status.Error(codes.Unavailable, "discover: no endpoint of service ns is reachable"))
			_, err = c.Request(to(h.url), req("c2"))
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), "no endpoint of service ns is reachable")
			require.NotErrorIs(t, err, dial.ErrUnreachable, "the hop was reached: it answered")
		})
	}
}

// TestHopAwayIsMarked: a refresh whose path says the next hop is an nsmgr or a forwarder, not
// the endpoint, and finds it unreachable is marked HopAway, also in its status, which is all
// the hops before see; one whose next hop is the endpoint is not: the endpoint may be gone.
func TestHopAwayIsMarked(t *testing.T) {
	ln, err := hopurl.Listen(unixURL(t, "fwd.sock"))
	require.NoError(t, err)
	u := hopurl.FromAddr(ln.Addr())
	require.NoError(t, ln.Close())
	c := newClient(t)
	refresh := func(next string) *networkservice.NetworkServiceRequest {
		return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
			Id: "c1", NetworkServiceEndpointName: "nse-1",
			Path: &networkservice.Path{Index: 0, PathSegments: []*networkservice.PathSegment{{Name: "nsc"}, {Name: next}}},
		}}
	}

	_, err = c.Request(to(u), refresh("forwarder-1"))
	require.ErrorIs(t, err, dial.ErrUnreachable)
	require.True(t, dial.HopAway(err))
	require.True(t, dial.HopAway(status.Convert(err).Err()), "the mark is in the status, for the hops before")
	require.Equal(t, codes.Unavailable, status.Code(err), "the code stays")

	_, err = c.Request(to(u), refresh("nse-1"))
	require.ErrorIs(t, err, dial.ErrUnreachable)
	require.False(t, dial.HopAway(err), "the endpoint itself is away")

	_, err = c.Request(to(u), req("c2"))
	require.False(t, dial.HopAway(err), "a first Request's path does not name the next hop")
	require.False(t, dial.HopAway(status.Error(codes.Unavailable, "no")))
	require.False(t, dial.HopAway(nil))
}

func TestRefreshToAnotherURLMoves(t *testing.T) {
	a := startHop(t, tcpURL("127.0.0.1"))
	b := startHop(t, tcpURL("[::1]"))
	c := newClient(t)

	conn, err := c.Request(to(a.url), req("c1"))
	require.NoError(t, err)
	conn, err = c.Request(to(b.url), &networkservice.NetworkServiceRequest{Connection: conn})
	require.NoError(t, err)

	require.Len(t, a.rec.Closes(), 1, "the old hop is told to close")
	require.Empty(t, a.rec.Open())
	a.waitEnd(t, 1) // and its ClientConn, used by nothing else, is closed
	require.Equal(t, []string{"c1"}, b.rec.Open())

	// Close goes to where the connection is, whatever the context says.
	_, err = c.Close(to(a.url), conn)
	require.NoError(t, err)
	require.Empty(t, b.rec.Open())
	require.Equal(t, int32(1), a.tr.begun.Load(), "the old hop is not dialed again")
	b.waitEnd(t, 1)
}

func TestMoveProceedsWhenOldHopRefusesClose(t *testing.T) {
	a := startHop(t, unixURL(t, "a.sock"))
	b := startHop(t, unixURL(t, "b.sock"))
	c := newClient(t)
	a.fail.FailCloses(status.Error(codes.Internal, "a: close failed"))

	conn, err := c.Request(to(a.url), req("c1"))
	require.NoError(t, err)
	conn, err = c.Request(to(b.url), &networkservice.NetworkServiceRequest{Connection: conn})
	require.NoError(t, err, "the connection at the old hop is left to expire")
	a.waitEnd(t, 1)
	_, err = c.Close(to(b.url), conn)
	require.NoError(t, err)
	b.waitEnd(t, 1)
}

// events is a monitor server that sends one event and ends.
type events struct{}

func (events) MonitorConnections(_ *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	return srv.Send(&networkservice.ConnectionEvent{Type: networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER})
}

// watch is a client element between dial and connect that opens a stream on dial.ClientConn,
// as an element watching the next hop would.
type watch struct {
	got []networkservice.ConnectionEventType
}

func (w *watch) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	stream, err := networkservice.NewMonitorConnectionClient(dial.ClientConn(ctx)).MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	if err != nil {
		return nil, err
	}
	ev, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	w.got = append(w.got, ev.GetType())
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (w *watch) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func TestStreamsOnClientConn(t *testing.T) {
	ln, err := hopurl.Listen(unixURL(t, "nse.sock"))
	require.NoError(t, err)
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, checks.NewServer())
	networkservice.RegisterMonitorConnectionServer(srv, events{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &watch{}
	c := chain.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), dial.NewClient(ctx), w, connect.NewClient())
	_, err = c.Request(to(hopurl.FromAddr(ln.Addr())), req("c1"))
	require.NoError(t, err)
	require.Equal(t, []networkservice.ConnectionEventType{networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER}, w.got)
}

func TestCloseOfUnknownConnectionUsesContextURL(t *testing.T) {
	h := startHop(t, unixURL(t, "nse.sock"))
	c := newClient(t)
	_, err := c.Close(to(h.url), &networkservice.Connection{Id: "from-before-a-restart"})
	require.NoError(t, err)
	require.Len(t, h.rec.Closes(), 1)
	h.waitEnd(t, 1)

	// Nothing names where it went: unknown, said in the caller's terms, and nothing is dialed.
	_, err = c.Close(context.Background(), &networkservice.Connection{Id: "nowhere"})
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), `connection "nowhere" is unknown here`)
	require.NotContains(t, status.Convert(err).Message(), "dial")
	require.Len(t, h.rec.Closes(), 1)
}

func TestChainContextClosesEverything(t *testing.T) {
	h := startHop(t, unixURL(t, "nse.sock"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := chain.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), dial.NewClient(ctx), connect.NewClient())

	_, err := c.Request(to(h.url), req("c1"))
	require.NoError(t, err)
	cancel()
	h.waitEnd(t, 1)

	_, err = c.Request(to(h.url), req("c2"))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, err.Error(), "dial: the client chain is shut down (context canceled)")
}

func TestDialOptionsApply(t *testing.T) {
	h := startHop(t, unixURL(t, "nse.sock"))
	var methods []string
	c := newClient(t, dial.WithDialOptions(grpc.WithUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			methods = append(methods, method)
			return invoker(ctx, method, req, reply, cc, opts...)
		})))
	conn, err := c.Request(to(h.url), req("c1"))
	require.NoError(t, err)
	_, err = c.Close(to(h.url), conn)
	require.NoError(t, err)
	require.Equal(t, []string{"/networkservice.NetworkService/Request", "/networkservice.NetworkService/Close"}, methods)
}

// ccOf records the ClientConn each Request of its chain sees, by connection ID.
type ccOf map[string]grpc.ClientConnInterface

func (c ccOf) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	c[req.GetConnection().GetId()] = dial.ClientConn(ctx)
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (c ccOf) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func TestClientConnIsOnePerNextHop(t *testing.T) {
	a, b := startHop(t, unixURL(t, "a.sock")), startHop(t, unixURL(t, "b.sock"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := ccOf{}
	c := chain.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), dial.NewClient(ctx), seen, connect.NewClient())
	for id, h := range map[string]*hop{"a1": a, "a2": a, "b1": b} {
		_, err := c.Request(to(h.url), req(id))
		require.NoError(t, err)
	}
	require.Same(t, seen["a1"], seen["a2"], "connections to one hop share its ClientConn, and see it as one value")
	require.NotSame(t, seen["a1"], seen["b1"])
}

func TestClientConnOutsideDial(t *testing.T) {
	require.Nil(t, dial.ClientConn(context.Background()))
}

func TestNilContextPanics(t *testing.T) {
	require.PanicsWithValue(t, "dial: NewClient needs a context, got nil", func() {
		var missing context.Context
		dial.NewClient(missing)
	})
}

// BenchmarkRequestClose measures one connection's Request and Close through dial and connect
// to a next hop on a unix socket, over the shared ClientConn.
func BenchmarkRequestClose(b *testing.B) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(b, err)
	defer func() { _ = os.RemoveAll(dir) }()
	ln, err := hopurl.Listen(&url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")})
	require.NoError(b, err)
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, checks.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := chain.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), dial.NewClient(ctx), connect.NewClient())
	reqCtx := to(hopurl.FromAddr(ln.Addr()))
	keep, err := c.Request(reqCtx, req("keep-the-conn-open"))
	require.NoError(b, err)
	defer func() { _, _ = c.Close(reqCtx, keep) }()

	b.ReportAllocs()
	for b.Loop() {
		conn, err := c.Request(reqCtx, req("c1"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Close(reqCtx, conn); err != nil {
			b.Fatal(err)
		}
	}
}
