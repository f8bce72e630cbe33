// Package orphan closes a connection whose caller went away: when the gRPC transport (the unix
// or TCP connection) that the caller's Requests came over ends, and no Request for the
// connection comes over another transport within a grace period, the connection is closed along
// the rest of the path as if the caller had closed it.
//
// Why: a caller that dies (a client's crash, a forwarder gone for good) never sends its Close,
// and timeout would close the connection only when the caller's token expires, ten minutes by
// default; meanwhile the endpoint keeps the address lease and every hop its interfaces and
// tunnels, and a client in a crash loop exhausts its endpoint's pool. A process that dies takes
// its sockets with it, so the hop it called learns it at once from its transport.
//
// What callers rely on:
//   - Only a connection whose last successful Request came over a transport that ended is
//     closed: a Request without a transport (a call within the process) arms nothing, and a
//     background Request (heal, through begin) carries its original caller's transport, so it
//     neither arms nor resets anything.
//   - A caller that is alive and lost its transport (the peer restarted, the network broke)
//     keeps the connection by requesting again over a new one within the grace (WithGrace,
//     default DefaultGrace): any Request for the connection over another transport moves the
//     watch there, whether or not it succeeds, since the caller is evidently alive. vwire's
//     client chain does so at once: its monitor client keeps a MonitorConnections stream open
//     on the transport of its Requests, so gRPC never closes it as idle, and heal re-requests as
//     soon as that stream breaks. A caller that keeps no stream and does not heal must refresh
//     within the grace after its transport closes, or lose the connection.
//   - A Request or Close whose caller goes away while it runs is finished rather than cut off
//     half-way: from here on a caller's call (not a background event) keeps the caller's
//     deadline (or, without one, the close timeout) but not its cancellation. A Close cut off
//     after this hop forgot the connection would leave the hops after it holding theirs until
//     their tokens expire; a Request cut off between two hops would leave the hop that answered
//     with a connection nobody asks for again. A Request that succeeds for a caller that is gone
//     is watched like any other and closed after the grace.
//   - The Close runs through begin's EventFactory, serialized with the connection's other
//     events and from begin's place in the chain, so every element closes what it set up; a
//     Close of the caller's own stops the watch.
//   - The grace must outlast the restart of a previous hop and its heal: a forwarder that
//     restarts is asked again by its nsmgr's heal within about a second.
//   - A peer whose machine vanishes without closing its sockets is noticed only when TCP gives
//     up on it; timeout still closes its connections at token expiry.
//
// Transports are known only to a gRPC server with StatsHandler among its options
// (grpc.StatsHandler), which tags each transport and call and signals their ends. An nsmgr serves with it (its callers are
// clients and forwarders); forwarders and endpoints do not, because their caller is an nsmgr,
// whose restart must leave the data plane as it is.
//
// It belongs after begin (whose EventFactory it uses) and metadata (where it keeps its watch).
// It keeps no goroutine: the end of a transport and the grace are context.AfterFunc and clock
// timers (sdk/pkg/tools/clock, from the context).
package orphan

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// DefaultGrace is how long a connection outlives its caller's transport unless WithGrace says
// otherwise: past a forwarder's restart and its nsmgr's heal (about a second), well within
// the ten seconds a node may take to forget a dead forwarder's connections.
const DefaultGrace = 5 * time.Second

// transport is one gRPC server transport: done ends when it closed.
type transport struct {
	done   context.Context
	cancel context.CancelFunc
}

type transportKey struct{}

// fromContext returns the transport the call of ctx came over, nil if unknown.
func fromContext(ctx context.Context) *transport {
	t, _ := ctx.Value(transportKey{}).(*transport)
	return t
}

// Transport returns a context that ends when the gRPC transport the call of ctx came over
// closes, or nil when the transport is unknown (a call within the process, a server without
// StatsHandler). Every call over one transport gets the same context, so comparing two tells
// whether they came over the same transport. For other elements that watch their callers the
// way this one does (registry/common/forwardergone: a forwarder that died).
func Transport(ctx context.Context) context.Context {
	if t := fromContext(ctx); t != nil {
		return t.done
	}
	return nil
}

// StatsHandler returns the gRPC stats handler that tells the element which transport a call
// came over and when it ended; serve with grpc.StatsHandler(orphan.StatsHandler()).
func StatsHandler() stats.Handler { return handler{} }

type handler struct{}

func (handler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	done, cancel := context.WithCancel(context.Background())
	return context.WithValue(ctx, transportKey{}, &transport{done: done, cancel: cancel})
}

func (handler) HandleConn(ctx context.Context, s stats.ConnStats) {
	if _, ended := s.(*stats.ConnEnd); ended {
		if t := fromContext(ctx); t != nil {
			t.cancel()
		}
	}
}

// TagRPC marks the calls of the NetworkService alone, the only ones the element serves: the
// nsmgr's other calls (registrations, Finds, monitor streams, health checks) pay no allocation.
func (handler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if !strings.HasPrefix(info.FullMethodName, networkServiceMethods) {
		return ctx
	}
	return context.WithValue(ctx, callKey{}, &call{})
}

// networkServiceMethods begins the full method name of Request and Close.
const networkServiceMethods = "/networkservice.NetworkService/"

func (handler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ended := s.(*stats.End); ended {
		if c, ok := ctx.Value(callKey{}).(*call); ok {
			c.ended.Store(true)
		}
	}
}

// call is one RPC: a background event re-entering the chain with the values of the Request
// that made the connection carries that RPC's call, ended long ago.
type call struct{ ended atomic.Bool }

type callKey struct{}

// running reports whether ctx is that of an RPC still running: a caller's call, not a
// background event.
func running(ctx context.Context) bool {
	c, ok := ctx.Value(callKey{}).(*call)
	return ok && !c.ended.Load()
}

// watch waits for the end of one transport, then for the grace, then closes the connection.
type watch struct {
	transport *transport
	// cancel ends the wait for the connection's turn of a Close already started, when the
	// watch is replaced while that Close waits behind the Request replacing it.
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	ended   func() bool // stops the AfterFunc on the transport's end
	timer   clock.Timer // the grace, once the transport ended
}

var watchKey = metadata.NewKey[*watch]("orphan")

// Option configures the element.
type Option func(*options)

type options struct {
	grace time.Duration
}

// WithGrace sets how long a connection outlives the transport of its caller's last Request
// (default DefaultGrace).
func WithGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// closeTimeout bounds each Close the element starts, the wait for the connection's turn
// included, and a caller's call without a deadline that it finishes for a caller gone.
const closeTimeout = 15 * time.Second

// NewServer returns the element. Once ctx is done (the component stops), no Close starts.
func NewServer(ctx context.Context, opts ...Option) networkservice.NetworkServiceServer {
	o := options{grace: DefaultGrace}
	for _, opt := range opts {
		opt(&o)
	}
	return &server{ctx: ctx, options: o}
}

type server struct {
	ctx context.Context
	options
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	events := begin.FromContext(ctx)
	if events == nil {
		return nil, status.Error(codes.Internal, "orphan: no begin before orphan in the chain: put begin.NewServer() before it")
	}
	t := fromContext(ctx)
	if t == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	ctx, cancel := s.finish(ctx)
	defer cancel()
	conn, err := next.Server(ctx).Request(ctx, req)
	m := metadata.Server(ctx)
	old, established := watchKey.Load(m)
	switch {
	case established && old.transport == t:
		return conn, err // a refresh, or a background event with its caller's transport
	case err != nil && !established:
		return nil, err // the first Request failed: metadata forgets the connection
	}
	if established {
		old.stop()
	}
	watchKey.Store(m, s.watch(ctx, events, t))
	return conn, err
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if w, ok := watchKey.LoadAndDelete(metadata.Server(ctx)); ok {
		w.stopUnlessClosing()
	}
	ctx, cancel := s.finish(ctx)
	defer cancel()
	return next.Server(ctx).Close(ctx, conn)
}

// finish returns the context of a caller's running call without its cancellation, so that the
// call runs to its end if the caller goes away, bounded by the caller's deadline or, without
// one, by the close timeout. Background events keep their context as it is: their own
// cancellation (the component stopping, a replaced timer) must still end them.
func (s *server) finish(ctx context.Context) (context.Context, context.CancelFunc) {
	if !running(ctx) {
		return ctx, func() {}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(closeTimeout)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// watch arranges a Close of the connection of ctx a grace after t ends.
func (s *server) watch(ctx context.Context, events begin.EventFactory, t *transport) *watch {
	wait, cancel := context.WithCancel(s.ctx)
	w := &watch{transport: t, cancel: cancel}
	c := clock.FromContext(ctx)
	logger := log.FromContext(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = context.AfterFunc(t.done, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped || wait.Err() != nil {
			return
		}
		w.timer = c.AfterFunc(s.grace, func() {
			defer cancel()
			if wait.Err() != nil { // replaced or stopped since the timer fired
				return
			}
			closing, done := context.WithTimeout(wait, closeTimeout)
			defer done()
			switch err := events.Close(closing); {
			case err == nil:
				logger.Info("orphan: closed: the caller's transport ended and no Request came over another", "grace", s.grace)
			case wait.Err() == nil && !errors.Is(err, begin.ErrForgotten):
				logger.Warn("orphan: closing a connection whose caller went away failed", "error", err)
			}
		})
	})
	return w
}

// stop ends the watch: nothing more starts, and a Close that waits for the connection's turn
// gives up.
func (w *watch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.ended()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.cancel()
}

// stopUnlessClosing ends the watch from a Close, which may be the watch's own: then its
// context must live on, and the timer's callback ends it.
func (w *watch) stopUnlessClosing() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.ended()
	if w.timer == nil || w.timer.Stop() {
		w.cancel()
	}
}
