// Package monitor tells a component's clients what happens to their connections: it serves
// MonitorConnections (connection.proto) with the connections the component holds, and passes up
// what the hops further down the path report.
//
// Server is both a chain element and the MonitorConnection service. In the NetworkService chain
// (after begin and metadata) it records each connection after a successful Request and sends an
// UPDATE, and sends a DELETE and forgets the connection on Close; a failed Request changes
// nothing. Registered as the MonitorConnection service, it gives a new subscriber an
// INITIAL_STATE_TRANSFER with every connection its MonitorScopeSelector matches, then the live
// events that match, in order. Snapshot and subscription are taken together, so no event falls
// between them and none comes twice.
//
// A subscriber never slows the component down: events wait in a bounded queue of its own
// (WithQueueSize), and a subscriber whose queue overflows is dropped: its stream ends with
// ResourceExhausted and it subscribes again to get a fresh INITIAL_STATE_TRANSFER. No event is
// skipped on a stream that goes on. Each subscriber is served by its gRPC handler goroutine;
// the server starts no goroutine of its own, and ends every stream with Unavailable once the
// context given to NewServer is done. (A subscriber that stops reading altogether holds only
// its own handler, blocked in gRPC flow control until it reads again, goes away, or the gRPC
// server is stopped.)
//
// What a subscriber sees depends on who it is. Over mutual TLS, a subscriber sees only the
// connections its SPIFFE ID takes part in (it made the connection's last Request here, or one
// of the connection's tokens names it as sub), unless WithOperators names it, and every
// connection it gets has the tokens of the other hops removed: tokens are credentials, and a
// hop's view must not let anyone else act as that hop. Without TLS (an insecure mesh, or a call
// within the process) it sees every connection whole, as before identities. Filtering costs a
// shallow copy of each connection sent to a subscriber with an identity (its path segments
// whose token goes; the rest is shared with the record), and each token's sub claim decoded
// once (a Server remembers those of the last 1024 tokens).
//
// NewClient is the other half: in the client chain of a component in the middle of a path, it
// follows the next hop's events for the connections it passes there, over one stream per next
// hop, and hands them to Sink(ctx), which the Server puts into the context of every event
// passing through it.
package monitor

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/lru"
)

// DefaultQueueSize is how many events wait for one subscriber before it is dropped.
const DefaultQueueSize = 128

// Option configures a Server (WithQueueSize) or a client element (WithIdleTimeout); each
// ignores the other's options.
type Option func(*options)

type options struct {
	queueSize int
	idle      time.Duration
	operators []string
}

// WithQueueSize sets how many events may wait for one subscriber (at least 1). NewClient
// ignores it.
func WithQueueSize(n int) Option {
	return func(o *options) { o.queueSize = max(n, 1) }
}

// Server records the connections of a chain and serves them to MonitorConnections subscribers.
type Server struct {
	ctx       context.Context
	queueSize int
	operators []string                   // SPIFFE IDs that see every connection
	subjects  *lru.Cache[string, string] // tokens' sub claims, by token

	mu    sync.Mutex
	conns map[string]*record // by connection ID
	subs  map[*subscriber]struct{}
}

// subscriber is one MonitorConnections stream.
type subscriber struct {
	selector *networkservice.MonitorScopeSelector
	viewer   viewer
	events   chan *networkservice.ConnectionEvent
	dropped  chan struct{} // closed when the queue overflowed
}

// NewServer returns a Server whose streams end when ctx is done.
func NewServer(ctx context.Context, opts ...Option) *Server {
	if ctx == nil {
		panic("monitor.NewServer: nil ctx")
	}
	o := options{queueSize: DefaultQueueSize}
	for _, opt := range opts {
		opt(&o)
	}
	return &Server{
		ctx:       ctx,
		queueSize: o.queueSize,
		operators: o.operators,
		subjects:  lru.New[string, string](subjectCacheSize),
		conns:     map[string]*record{},
		subs:      map[*subscriber]struct{}{},
	}
}

// Request passes the request on and, when it succeeded, records the connection and sends an
// UPDATE.
func (s *Server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	ctx = context.WithValue(ctx, sinkKey{}, &sink{server: s, id: req.GetConnection().GetId()})
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	s.publish(networkservice.ConnectionEventType_UPDATE, conn.Clone(), callerOf(ctx))
	return conn, nil
}

// Close passes the close on, then forgets the connection and sends a DELETE, whatever the rest
// of the chain answered.
func (s *Server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	ctx = context.WithValue(ctx, sinkKey{}, &sink{server: s, id: conn.GetId()})
	rv, err := next.Server(ctx).Close(ctx, conn)
	s.publish(networkservice.ConnectionEventType_DELETE, conn, "")
	return rv, err
}

// publish records conn, requested by caller (or forgets it, for a DELETE) and queues the event
// for every subscriber it matches. It never blocks: a subscriber with a full queue is dropped.
func (s *Server) publish(kind networkservice.ConnectionEventType, conn *networkservice.Connection, caller string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := &record{conn: conn, caller: caller}
	if kind == networkservice.ConnectionEventType_DELETE {
		stored, ok := s.conns[conn.GetId()]
		if !ok {
			return // never reported, nothing to take back
		}
		delete(s.conns, conn.GetId())
		rec = stored
	} else {
		s.conns[conn.GetId()] = rec
	}
	s.send(kind, rec)
}

// send queues an event about rec for its subscribers; the caller holds s.mu.
func (s *Server) send(kind networkservice.ConnectionEventType, rec *record) {
	var shared *networkservice.ConnectionEvent // for the subscribers that see all of it
	for sub := range s.subs {
		if !rec.conn.MatchesMonitorScopeSelector(sub.selector) || !sub.viewer.sees(rec, s.subjects) {
			continue
		}
		event := shared
		if sub.viewer.id != "" {
			event = &networkservice.ConnectionEvent{Type: kind, Connections: sub.viewer.view(rec, s.subjects)}
		} else if shared == nil {
			shared = &networkservice.ConnectionEvent{Type: kind, Connections: map[string]*networkservice.Connection{rec.conn.GetId(): rec.conn}}
			event = shared
		}
		select {
		case sub.events <- event: // nobody changes an event once made
		default:
			delete(s.subs, sub)
			close(sub.dropped)
		}
	}
}

// MonitorConnections sends the connections that selector matches, then their changes, until
// the subscriber leaves, falls too far behind, or the server stops. A selector over the bounds
// of vwire.dev/api/validate is InvalidArgument.
func (s *Server) MonitorConnections(selector *networkservice.MonitorScopeSelector, srv networkservice.MonitorConnection_MonitorConnectionsServer) error {
	if err := validate.MonitorScopeSelector(selector); err != nil { // it is matched against every connection, at each change
		return err
	}
	sub := &subscriber{
		selector: selector,
		viewer:   s.viewerOf(srv.Context()),
		events:   make(chan *networkservice.ConnectionEvent, s.queueSize),
		dropped:  make(chan struct{}),
	}
	s.mu.Lock()
	visible := make(map[string]*networkservice.Connection, len(s.conns))
	for _, rec := range s.conns {
		if sub.viewer.sees(rec, s.subjects) {
			maps.Copy(visible, sub.viewer.view(rec, s.subjects))
		}
	}
	initial := networkservice.FilterMapOnManagerScopeSelector(visible, selector)
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer s.unsubscribe(sub)

	err := srv.Send(&networkservice.ConnectionEvent{
		Type:        networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER,
		Connections: initial,
	})
	for err == nil {
		select {
		case <-sub.dropped:
			// Checked before each send: what is queued is stale once the subscriber must start over.
			return status.Errorf(codes.ResourceExhausted,
				"monitor: subscriber fell %d events behind and was dropped; subscribe again for a fresh state", s.queueSize)
		default:
		}
		select {
		case event := <-sub.events:
			err = srv.Send(event)
		case <-sub.dropped:
		case <-srv.Context().Done():
			return srv.Context().Err()
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "monitor: the component is stopping; subscribe to its successor")
		}
	}
	return err
}

func (s *Server) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
}

// Sink returns where a client element of this component hands what it learned downstream about
// the connection of the event ctx belongs to: the Server before it in the chain merges the
// downstream part of the path and the state into its record and tells its subscribers. Sink
// returns nil when no Server is before the caller. The function is safe to keep and call from
// any goroutine while the connection lives; it does nothing after the connection is closed.
func Sink(ctx context.Context) func(downstream *networkservice.Connection) {
	s, ok := ctx.Value(sinkKey{}).(*sink)
	if !ok {
		return nil
	}
	return s.update
}

type sinkKey struct{}

// sink binds a Server to the ID the connection has at the Server's place.
type sink struct {
	server *Server
	id     string
}

// update takes the path beyond the server's own segment and the state from downstream (the
// connection as the client element sees it) into the server's record, and sends an UPDATE when
// that changed the record.
func (k *sink) update(downstream *networkservice.Connection) {
	s := k.server
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.conns[k.id]
	if !ok {
		return // closed, or not yet returned by its first Request
	}
	stored := rec.conn
	merged := stored.Clone()
	own := merged.GetCurrentPathSegment()
	segs := downstream.GetPath().GetPathSegments()
	at := slices.IndexFunc(segs, func(p *networkservice.PathSegment) bool { return p.GetId() == own.GetId() })
	if own != nil && at >= 0 {
		end := merged.GetPath().GetIndex() + 1
		merged.Path.PathSegments = append(merged.Path.PathSegments[:end:end], cloneSegments(segs[at+1:])...)
	}
	merged.State = downstream.GetState()
	if merged.Equals(stored) {
		return
	}
	rec = &record{conn: merged, caller: rec.caller}
	s.conns[k.id] = rec
	s.send(networkservice.ConnectionEventType_UPDATE, rec)
}

func cloneSegments(segs []*networkservice.PathSegment) []*networkservice.PathSegment {
	out := make([]*networkservice.PathSegment, len(segs))
	for i, p := range segs {
		out[i] = p.Clone()
	}
	return out
}
