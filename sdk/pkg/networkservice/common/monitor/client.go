package monitor

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// DefaultIdleTimeout is how long the client element keeps a stream to a next hop open after the
// last connection following it closed, unless WithIdleTimeout says otherwise.
const DefaultIdleTimeout = 5 * time.Second

// WithIdleTimeout sets how long NewClient keeps a stream to a next hop open once no connection
// follows it (0: it ends with the last one). The Server ignores it.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) { o.idle = max(d, 0) }
}

// Event is what the client element learned from the next hop about one connection.
type Event struct {
	// Conn is the connection as this hop sees it, with the next hop's part of the path and its
	// state; a connection the next hop deleted arrives DOWN. Nil when Err is set.
	Conn *networkservice.Connection
	// Err says why the stream from the next hop ended: it stopped, restarted or cannot be
	// reached (Unimplemented: it serves no MonitorConnection, so there is nothing to follow).
	// It is the last event the connection gets from that stream.
	Err error
}

var (
	memberKey   = metadata.NewKey[*member]("monitor")
	listenerKey = metadata.NewKey[func(Event)]("monitor listener")
)

// Listen makes fn receive the events the client element gets for the connection of the event
// ctx belongs to, so that heal reacts to them without a stream of its own. Call it before the
// client element in the chain (it needs the client metadata); a later call replaces fn. fn is
// called from the stream's goroutine (or, for what arrived while the connection's Request was
// on its way, from that Request), one event at a time, in order: it must not block.
func Listen(ctx context.Context, fn func(Event)) {
	listenerKey.Store(metadata.Client(ctx), fn)
}

// NewClient returns the client element that follows what the next hop reports about the
// connections this hop passes to it, and passes it up: to the Sink of a Server before it in the
// component (an nsmgr or forwarder), which tells the component's own subscribers, and to the
// Listen function of each connection (heal).
//
// It keeps one MonitorConnections stream per next hop (per dial.ClientConn) and per name of this
// hop, with a scope selector naming only this hop's path segment name: the next hop sends on it
// every connection whose path passes this hop, and the element hands each event to the
// connection whose segment ID (this hop's, which every hop after it keeps in its copy of the
// path) the event carries. A hop passing thousands of connections to a handful of next hops so
// keeps a handful of streams and goroutines, not one per connection.
//
// A connection joins its next hop's stream before its first Request there goes out, and that
// Request waits until the stream is established (its INITIAL_STATE_TRANSFER arrived, which is one
// round trip for the first connection to a next hop and nothing after): so whatever the next hop
// that takes the Request reports about the connection comes on this stream, or the stream breaks;
// nothing falls between. What arrives before the Request returned is applied once it has, from
// the Request (a listener may hear of a connection DOWN while its Request is still on its way
// up). A refresh to the same next hop stays on the stream; a Request that went to another hop
// (reselect) moves to that hop's stream. Close leaves the stream before closing downstream, and
// the connection gets no event after its Close began. When a stream breaks (the next hop
// stopped, restarted or cannot be reached), every connection on it is reported DOWN upstream and
// gets the error (heal learns at once that the next hop is gone); each moves to a new stream
// with its next successful Request. A connection whose Request returned before it joined a new
// stream (its stream broke meanwhile) must be in that stream's INITIAL_STATE_TRANSFER, which
// replays what the next hop holds: if the next hop does not hold it, it is reported DOWN.
//
// The stream belongs to the element, not to any connection: it starts with the first connection
// going to that next hop, and ends when ctx is done, or once no connection has followed it for
// the idle timeout (WithIdleTimeout, default DefaultIdleTimeout, on the clock of ctx): a hop
// whose connections come and go pays no new stream each time. Each stream is read by one
// goroutine, the only goroutine of the element.
//
// The stream gives the next hop's copy of a connection; the element keeps this hop's ID, index
// and own segments and takes the path after this hop and the state from it. It belongs in a
// client chain after metadata and dial, before connect, and needs updatepath in the chain (a
// connection without this hop's segment is not followed).
func NewClient(ctx context.Context, opts ...Option) networkservice.NetworkServiceClient {
	if ctx == nil {
		panic("monitor.NewClient: nil ctx")
	}
	o := options{idle: DefaultIdleTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	return &client{ctx: ctx, idle: o.idle, streams: map[streamKey]*stream{}}
}

type client struct {
	ctx  context.Context
	idle time.Duration

	mu      sync.Mutex // held before a stream's mu, never after
	streams map[streamKey]*stream
}

// streamKey names what a stream follows: the connections this hop, named name, passes to cc.
type streamKey struct {
	cc   grpc.ClientConnInterface
	name string
}

// stream is one MonitorConnections stream from a next hop and the connections that follow it.
type stream struct {
	c      *client
	key    streamKey
	cancel context.CancelFunc

	ready chan struct{} // closed once the initial state arrived, or the stream ended

	// mu is held while an event is handed on, so a connection that left gets nothing more.
	mu      sync.Mutex
	members map[string]*member // by this hop's segment ID
	started bool               // the initial state arrived
	ended   bool               // the stream ended; its members wait for their next Request
	lost    error              // why it ended, when this element did not end it
	idle    clock.Timer        // ends the stream if no connection comes back in time
}

// member is one connection following a stream.
type member struct {
	s    *stream
	id   string        // this hop's segment ID
	meta *metadata.Map // the connection's client metadata, where its listener is
	// Guarded by s.mu:
	sink    func(*networkservice.Connection)
	joining bool                       // its first Request on this stream is on its way
	early   *networkservice.Connection // the next hop's latest copy, got while joining
	held    bool                       // returned before it joined: the initial state must show it
	conn    *networkservice.Connection // this hop's view: as last returned, updated by events
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	m := metadata.Client(ctx)
	old, _ := memberKey.Load(m)
	own := req.GetConnection().GetCurrentPathSegment()
	cc := dial.ClientConn(ctx)
	if cc == nil || own.GetName() == "" || own.GetId() == "" {
		// Nothing to follow: no dial before this element, or no segment of this hop.
		conn, err := next.Client(ctx).Request(ctx, req, opts...)
		if err == nil && old != nil {
			memberKey.Delete(m)
			old.leave()
		}
		return conn, err
	}
	key := streamKey{cc: cc, name: own.GetName()}
	mem := old
	if old == nil || old.s.key != key || old.id != own.GetId() || old.s.isEnded() {
		mem = c.join(key, own.GetId(), m, false)
		// The Request goes out once the next hop took the subscription (or the stream failed):
		// then whatever the next hop that takes the Request reports about it comes on this
		// stream, or the stream breaks.
		select {
		case <-mem.s.ready:
		case <-ctx.Done():
		}
	}
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		if mem != old {
			mem.leave()
		}
		return nil, err
	}
	if old != nil && old != mem {
		old.leave()
	}
	if mem.s.isEnded() {
		// The stream broke while the Request was on its way; the next hop answered, so a new
		// stream will reach it, and its INITIAL_STATE_TRANSFER says what this one missed.
		mem.leave()
		mem = c.join(key, own.GetId(), m, true)
	}
	memberKey.Store(m, mem)
	mem.joined(conn, Sink(ctx))
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if mem, ok := memberKey.LoadAndDelete(metadata.Client(ctx)); ok {
		mem.leave()
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// join adds the connection with this hop's segment ID id to the stream of key, starting the
// stream if there is none; returned says that its Request returned already.
func (c *client) join(key streamKey, id string, meta *metadata.Map, returned bool) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[key]
	if s == nil {
		s = c.start(key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	mem := &member{s: s, id: id, meta: meta, joining: true, held: returned && !s.started}
	s.members[id] = mem
	return mem
}

// start opens a stream for key and starts its goroutine; the caller holds c.mu.
func (c *client) start(key streamKey) *stream {
	ctx, cancel := context.WithCancel(c.ctx)
	s := &stream{c: c, key: key, cancel: cancel, ready: make(chan struct{}), members: map[string]*member{}}
	c.streams[key] = s
	go s.run(ctx)
	return s
}

// leave takes mem off its stream, and ends the stream (after the idle timeout) if it was the
// last connection on it.
func (mem *member) leave() {
	s := mem.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.members[mem.id] == mem {
		delete(s.members, mem.id)
	}
	if len(s.members) > 0 || s.ended || c.streams[s.key] != s {
		return
	}
	if c.idle <= 0 {
		s.stop()
		return
	}
	if s.idle == nil {
		s.idle = clock.FromContext(c.ctx).AfterFunc(c.idle, s.expire)
	}
}

// expire ends the stream if no connection came back during its idle time.
func (s *stream) expire() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.members) == 0 && !s.ended && c.streams[s.key] == s {
		s.stop()
	}
}

// stop ends an unused stream; the caller holds c.mu and s.mu.
func (s *stream) stop() {
	delete(s.c.streams, s.key)
	s.ended = true
	s.idle = nil
	s.cancel()
}

// joined records conn, as the connection's Request returned it, as the member's view, and hands
// on what the stream brought while the Request was on its way.
func (mem *member) joined(conn *networkservice.Connection, sink func(*networkservice.Connection)) {
	s := mem.s
	s.mu.Lock()
	defer s.mu.Unlock()
	mem.sink = sink
	mem.conn = conn.Clone()
	wasJoining := mem.joining
	mem.joining = false
	if early := mem.early; early != nil {
		mem.early = nil
		mem.update(early)
	}
	if wasJoining && s.lost != nil {
		mem.lose(s.lost) // the stream it just joined broke before it could tell
	}
}

func (s *stream) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func (s *stream) run(ctx context.Context) {
	selector := &networkservice.MonitorScopeSelector{PathSegments: []*networkservice.PathSegment{{Name: s.key.name}}}
	events, err := networkservice.NewMonitorConnectionClient(s.key.cc).MonitorConnections(ctx, selector)
	for err == nil {
		var event *networkservice.ConnectionEvent
		if event, err = events.Recv(); err == nil {
			s.receive(event)
		}
	}
	s.end(ctx, err)
}

// receive hands what an event says to the connections it is about.
func (s *stream) receive(event *networkservice.ConnectionEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range event.GetConnections() {
		if event.GetType() == networkservice.ConnectionEventType_DELETE {
			in.State = networkservice.State_DOWN
		}
		mem := s.follower(in)
		switch {
		case mem == nil: // not a connection this stream follows
		case mem.joining:
			mem.early = in
		default:
			mem.held = false
			mem.update(in)
		}
	}
	if s.started {
		return
	}
	s.started = true
	close(s.ready)
	// A connection whose Request returned before it joined, and that the next hop does not hold
	// now: the next hop lost it (it restarted in between).
	for _, mem := range s.members {
		if mem.held {
			mem.held = false
			gone := mem.conn.Clone()
			gone.State = networkservice.State_DOWN
			mem.update(gone)
		}
	}
}

// follower returns the member whose segment ID is in in's path, nil if none; the caller holds
// s.mu.
func (s *stream) follower(in *networkservice.Connection) *member {
	for _, seg := range in.GetPath().GetPathSegments() {
		if mem := s.members[seg.GetId()]; mem != nil {
			return mem
		}
	}
	return nil
}

// update takes the path after this hop and the state from the next hop's copy in into the
// member's view, and hands the view on if that changed it; the caller holds s.mu.
func (mem *member) update(in *networkservice.Connection) {
	mine := mem.conn
	segs := in.GetPath().GetPathSegments()
	at := -1
	for i, seg := range segs {
		if seg.GetId() == mem.id {
			at = i
			break
		}
	}
	index := int(mine.GetPath().GetIndex())
	if at < 0 || index >= len(mine.GetPath().GetPathSegments()) {
		return
	}
	downstream := segs[at+1:]
	known := mine.GetPath().GetPathSegments()[index+1:]
	fillWithheld(downstream, known)
	if in.GetState() == mine.GetState() && sameSegments(known, downstream) {
		return // what the next hop says after each Request: nothing new
	}
	view := mine.Clone()
	view.Path.PathSegments = append(view.Path.PathSegments[:index+1:index+1], cloneSegments(downstream)...)
	view.State = in.GetState()
	mem.conn = view
	if mem.sink != nil {
		mem.sink(view.Clone())
	}
	mem.listen(Event{Conn: view.Clone()})
}

// fillWithheld gives each segment of the next hop's copy in whose token it withheld (a monitor
// shows a subscriber with an identity only its own tokens) the token of the same segment in known,
// this hop's copy, when the segment is the same hop with the same expiry, so the same token: a
// withheld token is not a changed one, and taking it as one would report every connection again
// after each Request. The caller owns in (an event just received).
func fillWithheld(in, known []*networkservice.PathSegment) {
	for i, seg := range in[:min(len(in), len(known))] {
		if k := known[i]; seg.GetToken() == "" && seg.GetId() == k.GetId() && seg.GetName() == k.GetName() &&
			proto.Equal(seg.GetExpires(), k.GetExpires()) {
			seg.Token = k.GetToken()
		}
	}
}

func sameSegments(a, b []*networkservice.PathSegment) bool {
	return slices.EqualFunc(a, b, func(x, y *networkservice.PathSegment) bool { return proto.Equal(x, y) })
}

func (mem *member) listen(e Event) {
	if fn, ok := listenerKey.Load(mem.meta); ok {
		fn(e)
	}
}

// end takes the ended stream out of use and, unless this element ended it, reports every
// connection on it DOWN upstream and the error to its listener.
func (s *stream) end(ctx context.Context, err error) {
	c := s.c
	c.mu.Lock()
	if c.streams[s.key] == s {
		delete(c.streams, s.key)
	}
	c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	if !s.started {
		close(s.ready)
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	stopped := ctx.Err() != nil // by this element (unused) or with the chain
	s.cancel()
	if stopped {
		return
	}
	s.lost = err
	for _, mem := range s.members {
		if !mem.joining { // a joining one hears it when its Request returns
			mem.lose(err)
		}
	}
}

// lose reports the member's connection DOWN upstream, unless the next hop just serves no
// MonitorConnection, and hands err to its listener; the caller holds s.mu.
func (mem *member) lose(err error) {
	if status.Code(err) != codes.Unimplemented {
		down := mem.conn.Clone()
		down.State = networkservice.State_DOWN
		mem.conn = down
		if mem.sink != nil {
			mem.sink(down.Clone())
		}
	}
	mem.listen(Event{Err: err})
}
