package monitor

import (
	"context"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/log"
)

// Event is what the client element learned from the next hop about one connection.
type Event struct {
	// Conn is the connection as this hop sees it, with the next hop's part of the path and its
	// state; a connection the next hop deleted arrives DOWN. Nil when Err is set.
	Conn *networkservice.Connection
	// Err says why the stream from the next hop ended: it stopped, restarted or cannot be
	// reached (Unimplemented: it serves no MonitorConnection, so there is nothing to follow).
	// It is the last event of the stream.
	Err error
}

var (
	watchKey    = metadata.NewKey[*watch]("monitor")
	listenerKey = metadata.NewKey[func(Event)]("monitor listener")
)

// Listen makes fn receive the events the client element gets for the connection of the event
// ctx belongs to, so that heal reacts to them without a stream of its own. Call it before the
// client element in the chain (it needs the client metadata); a later call replaces fn. fn is
// called from the stream's goroutine, one event at a time, in order: it must not block.
func Listen(ctx context.Context, fn func(Event)) {
	listenerKey.Store(metadata.Client(ctx), fn)
}

// NewClient returns the client element that follows the next hop's MonitorConnections for each
// connection and passes what it learns up: to the Sink of a Server before it in the component
// (an nsmgr or forwarder), which tells the component's own subscribers, and to the Listen
// function of the connection (heal).
//
// After a successful Request it subscribes at the next hop, over dial.ClientConn, with a scope
// selector of this hop's own path segment (name and ID): every hop after this one keeps that
// segment in its copy of the path, and no other connection has it. One stream per connection,
// read by one goroutine: a hop passes few connections compared with what gRPC multiplexes on
// one ClientConn, a selector can name only one connection, and a per-connection stream lets
// the next hop authorize each one by its path. A refresh to the same next hop keeps the
// stream; a Request that went to another hop (reselect), or that follows a broken stream,
// replaces it. Close ends it before closing downstream, and waits for its goroutine.
//
// The stream gives the next hop's copy of the connection; the element keeps this hop's ID, index
// and own segments and takes the path after this hop and the state from it. When the stream
// breaks it reports the connection DOWN upstream (and the error to the listener). It belongs in
// a client chain after metadata and dial, before connect, and needs updatepath in the chain (a
// connection without this hop's segment is not followed). Streams end when ctx is done.
func NewClient(ctx context.Context) networkservice.NetworkServiceClient {
	if ctx == nil {
		panic("monitor.NewClient: nil ctx")
	}
	return &client{ctx: ctx}
}

type client struct {
	ctx context.Context
}

// watch is one connection's stream from the next hop.
type watch struct {
	cc     grpc.ClientConnInterface
	cancel context.CancelFunc
	done   chan struct{} // closed when the stream's goroutine returned
	sink   func(*networkservice.Connection)
	meta   *metadata.Map

	mu   sync.Mutex
	conn *networkservice.Connection // this hop's view: as last returned, updated by events
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	m := metadata.Client(ctx)
	cc := dial.ClientConn(ctx)
	w, ok := watchKey.Load(m)
	if ok && w.cc == cc && w.running() {
		w.set(conn)
		return conn, nil
	}
	if ok {
		w.stop()
		watchKey.Delete(m)
	}
	if cc == nil || conn.GetCurrentPathSegment() == nil {
		log.FromContext(ctx).Debug("monitor: not following the next hop: no dial or no path segment of this hop",
			"connection", conn.GetId())
		return conn, nil
	}
	watchKey.Store(m, c.follow(ctx, m, cc, conn))
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if w, ok := watchKey.LoadAndDelete(metadata.Client(ctx)); ok {
		w.stop()
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// follow subscribes at the next hop for conn and starts the goroutine that reads the stream.
func (c *client) follow(ctx context.Context, m *metadata.Map, cc grpc.ClientConnInterface, conn *networkservice.Connection) *watch {
	// The stream keeps the Request's values (logger, clock) but lives until stopped.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopWithChain := context.AfterFunc(c.ctx, cancel)
	w := &watch{
		cc:     cc,
		cancel: func() { stopWithChain(); cancel() },
		done:   make(chan struct{}),
		sink:   Sink(ctx),
		meta:   m,
		conn:   conn.Clone(),
	}
	own := conn.GetCurrentPathSegment()
	selector := &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Name: own.GetName(), Id: own.GetId()}},
	}
	go w.run(streamCtx, selector)
	return w
}

func (w *watch) run(ctx context.Context, selector *networkservice.MonitorScopeSelector) {
	defer close(w.done)
	stream, err := networkservice.NewMonitorConnectionClient(w.cc).MonitorConnections(ctx, selector)
	for err == nil {
		var event *networkservice.ConnectionEvent
		if event, err = stream.Recv(); err == nil {
			w.receive(event)
		}
	}
	if ctx.Err() != nil {
		return // stopped by this element: Close, a new next hop, or the chain's end
	}
	if status.Code(err) != codes.Unimplemented {
		down := w.get()
		down.State = networkservice.State_DOWN
		w.tell(down)
	}
	w.listen(Event{Err: err})
}

// receive passes on what an event says about this watch's connection, if it changed anything.
func (w *watch) receive(event *networkservice.ConnectionEvent) {
	mine := w.get()
	index := mine.GetPath().GetIndex()
	for _, in := range event.GetConnections() {
		segs := in.GetPath().GetPathSegments()
		if int(index) >= len(segs) || segs[index].GetId() != mine.GetId() {
			continue // another connection, or a path that does not go through this hop's segment
		}
		view := mine.Clone()
		view.Path.PathSegments = append(view.Path.PathSegments[:index+1:index+1], cloneSegments(segs[index+1:])...)
		view.State = in.GetState()
		if event.GetType() == networkservice.ConnectionEventType_DELETE {
			view.State = networkservice.State_DOWN
		}
		if view.Equals(mine) {
			continue
		}
		w.set(view)
		w.tell(view)
		w.listen(Event{Conn: view})
	}
}

// tell hands conn to the component's server-side monitor, if it has one.
func (w *watch) tell(conn *networkservice.Connection) {
	if w.sink != nil {
		w.sink(conn.Clone())
	}
}

func (w *watch) listen(e Event) {
	if fn, ok := listenerKey.Load(w.meta); ok {
		fn(e)
	}
}

func (w *watch) get() *networkservice.Connection {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.Clone()
}

func (w *watch) set(conn *networkservice.Connection) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn = conn.Clone()
}

func (w *watch) running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// stop ends the stream and waits for its goroutine, which never blocks for long: listeners
// and sinks do not block.
func (w *watch) stop() {
	w.cancel()
	<-w.done
}
