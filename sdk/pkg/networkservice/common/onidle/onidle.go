// Package onidle calls a function when an endpoint has had no connection for a while, so that
// an endpoint started on demand (spawned for a client) retires once nobody uses it.
//
// The idle time runs from when the element is made and again from when the last connection
// goes (a Close, also one sent by the timeout element when a connection expires); it stops while
// any connection exists or is being requested. Connections are counted by ID: a refresh is not a
// new one, and a first Request that fails further down the chain leaves no count behind.
//
// Guarantees:
//   - notify is called at most once, from a timer's goroutine, after a full idle period; from
//     then on every new connection is refused with Unavailable, so that the client asks again
//     and reaches another endpoint while this one goes away.
//   - Timing is one clock AfterFunc (the clock of ctx, see package clock): no goroutine of its
//     own, nothing running between events.
//   - When ctx is done, the timer is stopped and notify is never called; Requests pass as usual.
//   - A timeout of zero or less turns the element into a pass-through.
//
// Place: in an endpoint's chain after metadata (a connection is marked as counted in its
// metadata), early, so that a Request refused here costs nothing further down.
package onidle

import (
	"context"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// DefaultTimeout is the idle time without WithTimeout.
const DefaultTimeout = 10 * time.Minute

// Option configures the element.
type Option func(*options)

type options struct {
	timeout time.Duration
}

// WithTimeout sets how long the endpoint may stay without connections (DefaultTimeout); zero or
// less never retires it.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// countedKey marks a connection that is in the count.
var countedKey = metadata.NewKey[struct{}]("onidle")

type server struct {
	clock   clock.Clock
	timeout time.Duration
	notify  func()

	mu      sync.Mutex
	active  int         // connections counted
	timer   clock.Timer // the idle timer; nil while not running
	gen     uint64      // which timer may fire: a stopped one that still runs finds it changed
	retired bool        // notify was called
	stopped bool        // ctx is done, or the element is off
}

// NewServer returns the element; notify is what retires the endpoint (it must not be nil).
func NewServer(ctx context.Context, notify func(), opts ...Option) networkservice.NetworkServiceServer {
	if notify == nil {
		panic("onidle: NewServer: notify is nil")
	}
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	s := &server{clock: clock.FromContext(ctx), timeout: o.timeout, notify: notify, stopped: o.timeout <= 0}
	s.mu.Lock()
	s.arm()
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopped = true
		s.disarm()
	})
	return s
}

// arm starts the idle timer; the caller holds mu.
func (s *server) arm() {
	if s.stopped || s.retired {
		return
	}
	s.gen++
	gen := s.gen
	s.timer = s.clock.AfterFunc(s.timeout, func() { s.fire(gen) })
}

// disarm stops the idle timer; the caller holds mu.
func (s *server) disarm() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.gen++
}

func (s *server) fire(gen uint64) {
	s.mu.Lock()
	if gen != s.gen || s.active > 0 || s.stopped || s.retired {
		s.mu.Unlock()
		return
	}
	s.retired, s.timer = true, nil
	s.mu.Unlock()
	s.notify()
}

// join counts a new connection, unless the endpoint retired.
func (s *server) join() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return status.Errorf(codes.Unavailable, "onidle: this endpoint retired after %v without connections; request again to reach another endpoint", s.timeout)
	}
	s.active++
	if s.active == 1 {
		s.disarm()
	}
	return nil
}

// leave uncounts a connection and starts the idle time when it was the last.
func (s *server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 {
		s.arm()
	}
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	m := metadata.Server(ctx)
	if _, counted := countedKey.Load(m); counted {
		return next.Server(ctx).Request(ctx, req)
	}
	if err := s.join(); err != nil {
		return nil, err
	}
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		s.leave()
		return nil, err
	}
	countedKey.Store(m, struct{}{})
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if _, counted := countedKey.LoadAndDelete(metadata.Server(ctx)); counted {
		s.leave()
	}
	return next.Server(ctx).Close(ctx, conn)
}
