package monitor_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
)

// listener registers a monitor listener for each connection and queues its events, by the
// connection's ID at the listener's place.
type listener struct {
	mu     sync.Mutex
	events map[string]chan monitor.Event
}

func newListener() *listener { return &listener{events: map[string]chan monitor.Event{}} }

func (l *listener) of(id string) chan monitor.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.events[id]
	if !ok {
		ch = make(chan monitor.Event, 16)
		l.events[id] = ch
	}
	return ch
}

func (l *listener) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	events := l.of(req.GetConnection().GetId())
	monitor.Listen(ctx, func(e monitor.Event) {
		select {
		case events <- e:
		default:
			panic("test listener queue full")
		}
	})
	return next.Server(ctx).Request(ctx, req)
}

func (l *listener) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// next returns the next event of connection id.
func (l *listener) next(t *testing.T, id string) monitor.Event {
	t.Helper()
	select {
	case e := <-l.of(id):
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no monitor event for connection %s", id)
		return monitor.Event{}
	}
}

// none checks that connection id got no event.
func (l *listener) none(t *testing.T, id string) {
	t.Helper()
	select {
	case e := <-l.of(id):
		t.Fatalf("an unexpected event for connection %s: %+v", id, e)
	default:
	}
}

// path builds a mesh: the test plays clients at the head of the path, mgr passes their
// connections to nse, and both serve MonitorConnections.
type path struct {
	nse     *sinkTaker
	nseMon  *counted
	stopNSE func()
	mgr     networkservice.NetworkServiceClient
	mgrMon  networkservice.MonitorConnectionClient
	heard   *listener // mgr's client side listener
}

func newPath(t *testing.T, ctx context.Context, opts ...monitor.Option) *path {
	p := &path{nse: &sinkTaker{}, heard: newListener()}
	nseMon := monitor.NewServer(ctx)
	p.nseMon = &counted{MonitorConnectionServer: nseMon}
	nseURL, stop := start(t, next.NewNetworkServiceServer(
		updatepath.NewServer("nse"), begin.NewServer(), metadata.NewServer(), nseMon, p.nse), p.nseMon)
	p.stopNSE = stop

	mgrMon := monitor.NewServer(ctx)
	toNSE := next.NewNetworkServiceClient(
		metadata.NewClient(),
		adapters.NewServerToClient(p.heard),
		clienturl.NewClient(nseURL),
		dial.NewClient(ctx),
		monitor.NewClient(ctx, opts...),
		connect.NewClient(),
	)
	mgrURL, _ := start(t, next.NewNetworkServiceServer(
		updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(), mgrMon, connect.NewServer(toNSE)), mgrMon)
	p.mgr, p.mgrMon = clients(t, mgrURL)
	return p
}

func clientRequest(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id:             id,
		NetworkService: "ns",
		Path:           &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: id}}},
	}}
}

// mgrID is the ID of mgr's segment of conn.
func mgrID(conn *networkservice.Connection) string {
	return conn.GetPath().GetPathSegments()[1].GetId()
}

func TestEventsPassUpThePath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx)

	conn, err := p.mgr.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	require.Equal(t, []string{"nsc", "mgr", "nse"}, checks.PathNames(conn))
	id := mgrID(conn)

	// The client's own subscription at mgr, by its segment.
	stream := subscribe(t, ctx, p.mgrMon, &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: "nsc-1"}},
	})
	kind, conns := recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind)
	require.Contains(t, conns, id)

	// The endpoint reports the connection down: mgr tells its listener and its subscribers.
	down := conn.Clone()
	down.State = networkservice.State_DOWN
	p.nse.of(conn)(down)

	e := p.heard.next(t, id)
	require.NoError(t, e.Err)
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	require.Equal(t, id, e.Conn.GetId(), "the listener gets the connection as mgr's client side sees it")
	require.Equal(t, uint32(1), e.Conn.GetPath().GetIndex())

	kind, conns = recv(t, stream)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, kind)
	require.Equal(t, networkservice.State_DOWN, conns[id].GetState())
	require.Equal(t, []string{"nsc", "mgr", "nse"}, checks.PathNames(conns[id]))

	// Back up, then the endpoint dies: the lost stream is reported DOWN.
	p.nse.of(conn)(conn.Clone())
	require.Equal(t, networkservice.State_UP, p.heard.next(t, id).Conn.GetState())
	_, conns = recv(t, stream)
	require.Equal(t, networkservice.State_UP, conns[id].GetState())

	p.stopNSE()
	_, conns = recv(t, stream)
	require.Equal(t, networkservice.State_DOWN, conns[id].GetState())
	e = p.heard.next(t, id)
	require.Error(t, e.Err)
	require.Nil(t, e.Conn)
	require.Equal(t, codes.Unavailable, status.Code(e.Err), "%v", e.Err)
}

func TestConnectionsShareOneStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx)

	first, err := p.mgr.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	// The second connection joins a stream that started before its Request.
	second, err := p.mgr.Request(ctx, clientRequest("nsc-2"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, int32(1), p.nseMon.total.Load(), "one stream from mgr to nse for both connections")

	// Each connection gets its own events, and only those.
	down := second.Clone()
	down.State = networkservice.State_DOWN
	p.nse.of(second)(down)
	e := p.heard.next(t, mgrID(second))
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	require.Equal(t, mgrID(second), e.Conn.GetId())
	p.heard.none(t, mgrID(first))

	// The endpoint dies: every connection on the stream hears it, and mgr's subscribers see
	// each DOWN.
	stream := subscribe(t, ctx, p.mgrMon, &networkservice.MonitorScopeSelector{})
	_, conns := recv(t, stream)
	require.Len(t, conns, 2)
	p.stopNSE()
	for _, c := range []*networkservice.Connection{first, second} {
		e := p.heard.next(t, mgrID(c))
		require.Equal(t, codes.Unavailable, status.Code(e.Err), "%v", e.Err)
	}
	_, conns = recv(t, stream)
	require.Len(t, conns, 1)
	for _, c := range conns {
		require.Equal(t, mgrID(first), c.GetId(), "the second was DOWN already")
		require.Equal(t, networkservice.State_DOWN, c.GetState())
	}
}

func TestRefreshKeepsTheStreamAndCloseLeavesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx = clock.WithClock(ctx, fake)
	p := newPath(t, ctx, monitor.WithIdleTimeout(time.Minute))

	conn, err := p.mgr.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	// A refresh: the stream stays, and follows the connection as the refresh returned it.
	refresh := clientRequest("nsc-1")
	refresh.Connection = conn.Clone()
	refresh.Connection.Labels = map[string]string{"refreshed": "yes"}
	_, err = p.mgr.Request(ctx, refresh)
	require.NoError(t, err)

	down := conn.Clone()
	down.State = networkservice.State_DOWN
	p.nse.of(conn)(down)
	e := p.heard.next(t, mgrID(conn))
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	require.Equal(t, "yes", e.Conn.GetLabels()["refreshed"])
	require.Equal(t, int32(1), p.nseMon.total.Load(), "a refresh to the same hop opens no second stream")

	// After Close the connection hears nothing more: neither the endpoint's DELETE nor the
	// endpoint's end. The stream waits for the idle timeout; a connection in the meantime
	// takes it over.
	_, err = p.mgr.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, int32(1), p.nseMon.active.Load(), "the stream lingers")
	again, err := p.mgr.Request(ctx, clientRequest("nsc-2"))
	require.NoError(t, err)
	require.Equal(t, int32(1), p.nseMon.total.Load(), "the lingering stream is used again")
	_, err = p.mgr.Close(ctx, again)
	require.NoError(t, err)

	fake.Advance(time.Minute)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 0 }, 10*time.Second, time.Millisecond,
		"the stream ends once unused for the idle timeout")
	p.stopNSE()
	p.heard.none(t, mgrID(conn))
	p.heard.none(t, mgrID(again))
}

func TestWithoutIdleTimeoutTheLastCloseEndsTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx, monitor.WithIdleTimeout(0))

	conn, err := p.mgr.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 1 }, 10*time.Second, time.Millisecond)
	_, err = p.mgr.Close(ctx, conn)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 0 }, 10*time.Second, time.Millisecond)

	// The next connection opens a new one.
	conn, err = p.mgr.Request(ctx, clientRequest("nsc-2"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, int32(2), p.nseMon.total.Load())
	_, err = p.mgr.Close(ctx, conn)
	require.NoError(t, err)
}

func TestBrokenStreamIsReplacedByTheNextRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newPath(t, ctx)

	conn, err := p.mgr.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	id := mgrID(conn)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 1 }, 10*time.Second, time.Millisecond)

	// The endpoint's monitor drops the stream while the endpoint lives on.
	p.nseMon.kick()
	e := p.heard.next(t, id)
	require.Error(t, e.Err)

	// The next Request (heal's) follows the endpoint again, on a new stream.
	refresh := clientRequest("nsc-1")
	refresh.Connection = conn.Clone()
	_, err = p.mgr.Request(ctx, refresh)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.nseMon.active.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, int32(2), p.nseMon.total.Load())
	down := conn.Clone()
	down.State = networkservice.State_DOWN
	p.nse.of(conn)(down)
	require.Equal(t, networkservice.State_DOWN, p.heard.next(t, id).Conn.GetState())
	_, err = p.mgr.Close(ctx, conn)
	require.NoError(t, err)
}

func TestWhatArrivesDuringTheRequestIsNotLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// An endpoint whose monitor tells, as soon as it holds the connection and before the
	// connection's Request returns, that the connection is down.
	ep := &downAtOnce{held: make(chan *networkservice.Connection, 1), sent: make(chan struct{})}
	nseURL, _ := start(t, next.NewNetworkServiceServer(updatepath.NewServer("nse"), ep), ep)
	// The reply waits until the stream has handled that event (the second): its reader came back
	// for a third.
	handled := make(chan struct{})
	var once sync.Once
	reads := grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return &countReads{ClientStream: s, third: func() { once.Do(func() { close(handled) }) }}, err
	})
	heard := newListener()
	c := next.NewNetworkServiceServer(updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(),
		connect.NewServer(next.NewNetworkServiceClient(
			metadata.NewClient(), adapters.NewServerToClient(heard), clienturl.NewClient(nseURL),
			dial.NewClient(ctx, dial.WithDialOptions(reads)), monitor.NewClient(ctx), waitFor(handled), connect.NewClient())))
	conn, err := c.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	e := heard.next(t, mgrID(conn))
	require.NoError(t, e.Err)
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState())
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
}

// countReads calls third when its stream is read the third time.
type countReads struct {
	grpc.ClientStream
	n     int
	third func()
}

func (c *countReads) RecvMsg(m any) error {
	if c.n++; c.n == 3 {
		c.third()
	}
	return c.ClientStream.RecvMsg(m)
}

// waitFor returns a client element whose Requests return once ch is closed.
func waitFor(ch chan struct{}) networkservice.NetworkServiceClient {
	return adapters.NewServerToClient(&waiter{ch: ch})
}

type waiter struct{ ch chan struct{} }

func (w *waiter) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	select {
	case <-w.ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return conn, err
}

func (w *waiter) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// downAtOnce is an endpoint and its monitor: after an empty initial state, the monitor waits
// for the first Request and sends its connection, DOWN; the Request returns once that is sent.
type downAtOnce struct {
	held chan *networkservice.Connection
	sent chan struct{}
}

func (d *downAtOnce) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	down := req.GetConnection().Clone()
	down.State = networkservice.State_DOWN
	d.held <- down
	select {
	case <-d.sent:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return next.Server(ctx).Request(ctx, req)
}

func (d *downAtOnce) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (d *downAtOnce) MonitorConnections(_ *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if err := srv.Send(&networkservice.ConnectionEvent{Type: networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER}); err != nil {
		return err
	}
	select {
	case down := <-d.held:
		err := srv.Send(&networkservice.ConnectionEvent{
			Type:        networkservice.ConnectionEventType_UPDATE,
			Connections: map[string]*networkservice.Connection{down.GetId(): down},
		})
		close(d.sent)
		if err != nil {
			return err
		}
	case <-srv.Context().Done():
	}
	<-srv.Context().Done()
	return nil
}

func TestNoNextHopMonitor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// An endpoint without MonitorConnection: the stream ends Unimplemented, nothing goes up.
	nseURL, _ := start(t, next.NewNetworkServiceServer(updatepath.NewServer("nse")), nil)
	heard := newListener()
	mgrMon := monitor.NewServer(ctx)
	c := next.NewNetworkServiceServer(updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(), mgrMon,
		connect.NewServer(next.NewNetworkServiceClient(
			metadata.NewClient(), adapters.NewServerToClient(heard), clienturl.NewClient(nseURL), dial.NewClient(ctx), monitor.NewClient(ctx), connect.NewClient())))
	conn, err := c.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	e := heard.next(t, mgrID(conn))
	require.Equal(t, codes.Unimplemented, status.Code(e.Err))
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
}

// counted counts the MonitorConnections streams a server was asked for, and ends the open ones
// on kick.
type counted struct {
	networkservice.MonitorConnectionServer
	total, active atomic.Int32

	mu    sync.Mutex
	kicks []context.CancelFunc
}

func (c *counted) MonitorConnections(sel *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	c.total.Add(1)
	c.active.Add(1)
	defer c.active.Add(-1)
	ctx, kick := context.WithCancel(srv.Context())
	defer kick()
	c.mu.Lock()
	c.kicks = append(c.kicks, kick)
	c.mu.Unlock()
	return c.MonitorConnectionServer.MonitorConnections(sel, kickable{srv, ctx})
}

func (c *counted) kick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, kick := range c.kicks {
		kick()
	}
	c.kicks = nil
}

type kickable struct {
	networkservice.MonitorConnection_MonitorConnectionsServer
	ctx context.Context
}

func (k kickable) Context() context.Context { return k.ctx }

// withholding is an endpoint whose monitor shows its subscriber what a secure monitor shows a
// hop: the connection without the other hops' tokens. It signs its own segment, hands each
// connection it returns to its monitor, and sends, once told, that connection with every token
// withheld, then the same DOWN.
type withholding struct {
	returned chan *networkservice.Connection
	send     chan struct{}
}

func (w *withholding) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	own := req.GetConnection().GetCurrentPathSegment()
	own.Token, own.Expires = "nse-token", timestamppb.New(time.Unix(2_000_000_000, 0))
	conn, err := next.Server(ctx).Request(ctx, req)
	if err == nil {
		w.returned <- conn.Clone()
	}
	return conn, err
}

func (w *withholding) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (w *withholding) MonitorConnections(_ *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if err := srv.Send(&networkservice.ConnectionEvent{Type: networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER}); err != nil {
		return err
	}
	var conn *networkservice.Connection
	select {
	case conn = <-w.returned:
	case <-srv.Context().Done():
		return nil
	}
	select {
	case <-w.send:
	case <-srv.Context().Done():
		return nil
	}
	for _, seg := range conn.GetPath().GetPathSegments() {
		seg.Token = ""
	}
	down := conn.Clone()
	down.State = networkservice.State_DOWN
	for _, c := range []*networkservice.Connection{conn, down} {
		if err := srv.Send(&networkservice.ConnectionEvent{
			Type:        networkservice.ConnectionEventType_UPDATE,
			Connections: map[string]*networkservice.Connection{c.GetId(): c},
		}); err != nil {
			return err
		}
	}
	<-srv.Context().Done()
	return nil
}

// TestAWithheldTokenIsNoChange: a next hop's monitor that withholds tokens (a secure one does,
// but for the subscriber's own) says nothing new by that alone, so nothing goes up the path;
// a real change does, with the tokens this hop knows.
func TestAWithheldTokenIsNoChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nse := &withholding{returned: make(chan *networkservice.Connection, 1), send: make(chan struct{})}
	nseURL, _ := start(t, next.NewNetworkServiceServer(updatepath.NewServer("nse"), nse), nse)
	heard := newListener()
	mgrMon := monitor.NewServer(ctx)
	c := next.NewNetworkServiceServer(updatepath.NewServer("mgr"), begin.NewServer(), metadata.NewServer(), mgrMon,
		connect.NewServer(next.NewNetworkServiceClient(
			metadata.NewClient(), adapters.NewServerToClient(heard), clienturl.NewClient(nseURL), dial.NewClient(ctx), monitor.NewClient(ctx), connect.NewClient())))
	conn, err := c.Request(ctx, clientRequest("nsc-1"))
	require.NoError(t, err)
	require.Equal(t, "nse-token", conn.GetPath().GetPathSegments()[2].GetToken())

	close(nse.send)
	e := heard.next(t, mgrID(conn))
	require.NoError(t, e.Err)
	require.Equal(t, networkservice.State_DOWN, e.Conn.GetState(), "the first event heard is the change, not the withheld tokens")
	require.Equal(t, "nse-token", e.Conn.GetPath().GetPathSegments()[2].GetToken(), "the withheld token is the one this hop knows")
	heard.none(t, mgrID(conn))
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
}
