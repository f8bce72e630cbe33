// Package begin runs the events of one connection one at a time: a Request, a Close and the
// background work of other elements (refresh, timeout, heal) never overlap for the same
// connection ID, while different connections proceed in parallel.
//
// Background work re-enters the chain through the EventFactory found in the context of every
// event (FromContext): it re-requests with the last successful request, or closes, from begin's
// place in the chain and serialized with everything else. Begin forgets a connection when it is
// closed or when its first Request fails; a factory of a forgotten connection answers
// ErrForgotten and does nothing. A Close that the chain refuses with PermissionDenied (authorize:
// the caller is not on the connection's path) leaves an established connection as it was, its
// background work (timeout's Close) included. Begin belongs near the head of a chain, after only the elements
// that settle the connection ID (updatepath).
//
// The endpoint chosen and the path beyond this hop belong to the hops downstream, which may
// change them (an nsmgr healed to another endpoint) without the previous hop learning it before
// its next Request returns. So a refresh (not a reselection) or a Close of an established
// connection goes on with the endpoint name and the downstream path segments this hop last got
// back, not the stale copies the previous hop sends: the next hop sees the connection it knows
// rather than a new one, and an endpoint's Close releases what it handed out.
package begin

import (
	"context"
	"errors"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// ErrForgotten is what an EventFactory answers once its connection has been closed.
var ErrForgotten = errors.New("begin: connection is closed")

// EventFactory re-enters the chain for one connection, serialized with its other events.
// Its methods block until the event ran; never call them from inside an event of the same
// connection (that event holds the turn they wait for): call them from timers and streams.
type EventFactory interface {
	// Request repeats the last successful Request, with the connection as it was returned.
	// ctx bounds the wait and the call; the values come from the original Request.
	Request(ctx context.Context, opts ...RequestOption) error
	// Close closes the connection as its last successful Request returned it.
	Close(ctx context.Context) error
}

// RequestOption changes what an EventFactory's Request sends.
type RequestOption func(*networkservice.Connection)

// Reselect makes the repeated Request ask for a new endpoint, as NSM does: state
// RESELECT_REQUESTED, no network_service_endpoint_name and no mechanism. Because begin applies it
// at its own place, every element after begin (discovery in an nsmgr) chooses anew.
func Reselect() RequestOption {
	return func(c *networkservice.Connection) {
		c.State = networkservice.State_RESELECT_REQUESTED
		c.NetworkServiceEndpointName = ""
		c.Mechanism = nil
	}
}

type factoryKey struct{}

// FromContext returns the EventFactory of the connection whose event ctx belongs to, or nil
// outside a chain with begin.
func FromContext(ctx context.Context) EventFactory {
	f, _ := ctx.Value(factoryKey{}).(EventFactory)
	return f
}

// NewServer returns begin for a server chain.
func NewServer() networkservice.NetworkServiceServer {
	return &server{conns: map[string]*entry{}}
}

// NewClient returns begin for a client chain. A client chain called from a server chain that
// has begin already (an nsmgr's, a forwarder's) joins the server's events instead of starting its
// own: the server's begin serializes them, and background work of the client's elements (heal,
// refresh) re-enters the whole server chain, where discovery can choose again.
func NewClient() networkservice.NetworkServiceClient {
	return adapters.NewServerToClient(&joining{begin: NewServer()})
}

type joining struct {
	begin networkservice.NetworkServiceServer
}

func (j *joining) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if FromContext(ctx) != nil {
		return next.Server(ctx).Request(ctx, req)
	}
	return j.begin.Request(ctx, req)
}

func (j *joining) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if FromContext(ctx) != nil {
		return next.Server(ctx).Close(ctx, conn)
	}
	return j.begin.Close(ctx, conn)
}

type server struct {
	mu    sync.Mutex
	conns map[string]*entry
}

// entry is one connection's turn and what background events need to repeat it.
type entry struct {
	owner *server
	id    string
	turn  chan struct{} // holding the one slot is holding the connection's turn
	// Set while holding the turn:
	forgotten bool
	last      *networkservice.NetworkServiceRequest // last successful request, with the returned connection
	rest      context.Context                       // the context begin passed to next then, without its cancel
}

// acquire waits for the turn of connection id and returns its entry.
func (s *server) acquire(ctx context.Context, id string) (*entry, error) {
	for {
		s.mu.Lock()
		e, ok := s.conns[id]
		if !ok {
			e = &entry{owner: s, id: id, turn: make(chan struct{}, 1)}
			s.conns[id] = e
		}
		s.mu.Unlock()
		select {
		case e.turn <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if ctx.Err() != nil { // both were ready and select chose the turn: the caller gave up
			<-e.turn
			return nil, ctx.Err()
		}
		if !e.forgotten {
			return e, nil
		}
		// Closed while we waited: this event belongs to a new incarnation of the ID.
		<-e.turn
	}
}

func (e *entry) release() { <-e.turn }

// forget drops the entry; the caller holds its turn.
func (e *entry) forget() {
	e.forgotten = true
	e.owner.mu.Lock()
	if e.owner.conns[e.id] == e {
		delete(e.owner.conns, e.id)
	}
	e.owner.mu.Unlock()
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	e, err := s.acquire(ctx, req.GetConnection().GetId())
	if err != nil {
		return nil, err
	}
	defer e.release()
	if e.last != nil && req.GetConnection().GetState() != networkservice.State_RESELECT_REQUESTED {
		e.downstream(req.GetConnection())
	}
	return e.request(context.WithValue(ctx, factoryKey{}, e), req)
}

// downstream gives conn the endpoint and the path segments after this hop's from the connection
// as this hop last got it back, when conn's path up to this hop is the same as that one's.
func (e *entry) downstream(conn *networkservice.Connection) {
	last := e.last.GetConnection()
	if name := last.GetNetworkServiceEndpointName(); name != "" && conn.GetNetworkServiceEndpointName() != "" {
		conn.NetworkServiceEndpointName = name
	}
	path, lastPath := conn.GetPath(), last.GetPath()
	i := int(path.GetIndex())
	if i != int(lastPath.GetIndex()) || i >= len(path.GetPathSegments()) || i >= len(lastPath.GetPathSegments()) ||
		path.GetPathSegments()[i].GetId() != lastPath.GetPathSegments()[i].GetId() {
		return
	}
	segments := path.GetPathSegments()[: i+1 : i+1]
	for _, s := range lastPath.GetPathSegments()[i+1:] {
		segments = append(segments, s.Clone())
	}
	path.PathSegments = segments
}

// request runs a Request while holding the turn.
func (e *entry) request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		if e.last == nil {
			e.forget()
		}
		return nil, err
	}
	// What a background Request repeats: the preferences as asked, the connection as returned
	// (cloned alone: the request's own connection is replaced anyway).
	last := (&networkservice.NetworkServiceRequest{MechanismPreferences: req.GetMechanismPreferences()}).Clone()
	last.Connection = conn.Clone()
	e.last, e.rest = last, context.WithoutCancel(ctx)
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	e, err := s.acquire(ctx, conn.GetId())
	if err != nil {
		return nil, err
	}
	defer e.release()
	if e.last != nil {
		e.downstream(conn)
	}
	ctx = context.WithValue(ctx, factoryKey{}, e)
	rv, err := next.Server(ctx).Close(ctx, conn)
	if e.last == nil || status.Code(err) != codes.PermissionDenied {
		e.forget()
	}
	return rv, err
}

// during returns a context with the values of the original Request and the cancellation and
// deadline of ctx, for background events.
func (e *entry) during(ctx context.Context) (context.Context, context.CancelFunc) {
	run, cancel := context.WithCancel(e.rest)
	if d, ok := ctx.Deadline(); ok {
		run, cancel = context.WithDeadline(e.rest, d)
	}
	stop := context.AfterFunc(ctx, cancel)
	return run, func() { stop(); cancel() }
}

func (e *entry) Request(ctx context.Context, opts ...RequestOption) error {
	if err := e.take(ctx); err != nil {
		return err
	}
	defer e.release()
	run, cancel := e.during(ctx)
	defer cancel()
	req := e.last.Clone()
	for _, opt := range opts {
		opt(req.GetConnection())
	}
	_, err := e.request(run, req)
	return err
}

func (e *entry) Close(ctx context.Context) error {
	if err := e.take(ctx); err != nil {
		return err
	}
	defer e.release()
	defer e.forget()
	run, cancel := e.during(ctx)
	defer cancel()
	_, err := next.Server(run).Close(run, e.last.GetConnection().Clone())
	return err
}

// take waits for this entry's turn for a background event.
func (e *entry) take(ctx context.Context) error {
	select {
	case e.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if ctx.Err() != nil { // a timer whose work was replaced while it waited must not run it
		e.release()
		return ctx.Err()
	}
	if e.forgotten || e.last == nil {
		e.release()
		return ErrForgotten
	}
	return nil
}
