// Package begin runs the Registers and Unregisters of one record name one at a time, while
// different names proceed in parallel; background work of other elements (expire, refresh,
// heal) re-enters the chain through it, serialized with everything else.
//
// A name's events run in the order they get their turn. Find is passed on untouched.
// EventFactory, found in the context of every Register and Unregister (FromContext), starts an
// event for that name from begin's place in the chain: Register with a record the caller
// gives, Unregister with the record as last registered, both with the context values of the last
// successful Register. An element withdraws an event it started by cancelling the event's
// context: an event whose context ends before it gets its turn does nothing; once it runs, only
// the context's deadline bounds it (so the element may replace its own state, cancelling old
// events, while one of its events is passing through it). After schedules such an event on the
// clock from the context.
//
// Background tells an element whether the event it sees is such a background event.
//
// Begin forgets a name when it is unregistered (whatever the answer) or when its first Register
// fails; a factory of a forgotten name answers ErrForgotten and does nothing.
// Begin belongs near the head of a chain: after updatepath, before every element that keeps
// per-name state or starts background events.
package begin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// ErrForgotten is what an EventFactory answers once its name has been unregistered.
var ErrForgotten = errors.New("begin: the record is unregistered")

// EventFactory starts events for one record name, serialized with its other events. Its
// methods block until the event ran; never call them from inside an event of the same name
// (that event holds the turn they wait for): call them from timers and streams.
type EventFactory[R next.Record] interface {
	// Register registers r, which must carry the factory's name.
	Register(ctx context.Context, r R) error
	// Unregister unregisters the record as it was last registered.
	Unregister(ctx context.Context) error
}

// After runs event d from now on c (in the goroutine of a runtime timer), with a context
// derived from parent that ends when stop is called; stop also prevents a run that has not
// started. It is how elements schedule their background events: event calls an EventFactory
// with the context it gets, so that stopping withdraws an event still waiting for its turn.
func After(parent context.Context, c clock.Clock, d time.Duration, event func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(parent)
	t := c.AfterFunc(d, func() { event(ctx) })
	return func() {
		t.Stop()
		cancel()
	}
}

type factoryKey[R next.Record] struct{}

// FromContext returns the EventFactory of the name whose event ctx belongs to, or nil outside
// a chain with begin.
func FromContext[R next.Record](ctx context.Context) EventFactory[R] {
	f, _ := ctx.Value(factoryKey[R]{}).(EventFactory[R])
	return f
}

// NewNS returns begin for network services.
func NewNS() next.NS { return newBegin[*registry.NetworkService]() }

// NewNSE returns begin for network service endpoints.
func NewNSE() next.NSE { return newBegin[*registry.NetworkServiceEndpoint]() }

type begin[R next.Record] struct {
	mu    sync.Mutex
	names map[string]*entry[R]
}

func newBegin[R next.Record]() *begin[R] { return &begin[R]{names: map[string]*entry[R]{}} }

// entry is one name's turn and what background events need.
type entry[R next.Record] struct {
	owner *begin[R]
	name  string
	turn  chan struct{} // holding the one slot is holding the name's turn
	// Set while holding the turn:
	forgotten  bool
	registered bool
	last       R               // the record the last successful Register returned
	rest       context.Context // the context begin passed on then, without its cancel
}

func (b *begin[R]) acquire(ctx context.Context, name string) (*entry[R], error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "begin: the record has no name; give it one")
	}
	for {
		b.mu.Lock()
		e, ok := b.names[name]
		if !ok {
			e = &entry[R]{owner: b, name: name, turn: make(chan struct{}, 1)}
			b.names[name] = e
		}
		b.mu.Unlock()
		select {
		case e.turn <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !e.forgotten {
			return e, nil
		}
		// Unregistered while we waited: this event belongs to a new registration of the name.
		<-e.turn
	}
}

func (e *entry[R]) release() { <-e.turn }

// forget drops the entry; the caller holds its turn.
func (e *entry[R]) forget() {
	e.forgotten = true
	e.owner.mu.Lock()
	if e.owner.names[e.name] == e {
		delete(e.owner.names, e.name)
	}
	e.owner.mu.Unlock()
}

func (b *begin[R]) Register(ctx context.Context, r R) (R, error) {
	e, err := b.acquire(ctx, r.GetName())
	if err != nil {
		var zero R
		return zero, err
	}
	defer e.release()
	return e.register(context.WithValue(ctx, factoryKey[R]{}, EventFactory[R](e)), r)
}

// register runs a Register while holding the turn.
func (e *entry[R]) register(ctx context.Context, r R) (R, error) {
	got, err := next.Of[R](ctx).Register(ctx, r)
	if err != nil {
		if !e.registered {
			e.forget()
		}
		return got, err
	}
	e.registered, e.last, e.rest = true, proto.Clone(got).(R), context.WithoutCancel(ctx)
	return got, nil
}

func (b *begin[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (b *begin[R]) Unregister(ctx context.Context, r R) error {
	e, err := b.acquire(ctx, r.GetName())
	if err != nil {
		return err
	}
	defer e.release()
	defer e.forget()
	ctx = context.WithValue(ctx, factoryKey[R]{}, EventFactory[R](e))
	return next.Of[R](ctx).Unregister(ctx, r)
}

// take waits for the turn for a background event.
func (e *entry[R]) take(ctx context.Context) error {
	select {
	case e.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	switch {
	case ctx.Err() != nil: // withdrawn while waiting
		e.release()
		return ctx.Err()
	case e.forgotten || !e.registered:
		e.release()
		return ErrForgotten
	}
	return nil
}

// during returns the context of a background event: the values of the last Register, marked
// as a background event, the deadline of ctx.
func (e *entry[R]) during(ctx context.Context) (context.Context, context.CancelFunc) {
	rest := context.WithValue(e.rest, backgroundKey{}, true)
	if d, ok := ctx.Deadline(); ok {
		return context.WithDeadline(rest, d)
	}
	return context.WithCancel(rest)
}

type backgroundKey struct{}

// Background reports whether ctx is the context of an event started through an EventFactory
// (an expiry, a refresh, a heal): the component's own doing, which carries the values of the
// name's last Register but was not asked for by a caller now. Authorize lets such events pass.
func Background(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

func (e *entry[R]) Register(ctx context.Context, r R) error {
	if r.GetName() != e.name {
		return status.Errorf(codes.Internal, "begin: a background Register of %q got a record named %q", e.name, r.GetName())
	}
	if err := e.take(ctx); err != nil {
		return err
	}
	defer e.release()
	run, cancel := e.during(ctx)
	defer cancel()
	if _, err := e.register(run, r); err != nil {
		return fmt.Errorf("begin: background Register of %q: %w", e.name, err)
	}
	return nil
}

func (e *entry[R]) Unregister(ctx context.Context) error {
	if err := e.take(ctx); err != nil {
		return err
	}
	defer e.release()
	defer e.forget()
	run, cancel := e.during(ctx)
	defer cancel()
	if err := next.Of[R](run).Unregister(run, proto.Clone(e.last).(R)); err != nil {
		return fmt.Errorf("begin: background Unregister of %q: %w", e.name, err)
	}
	return nil
}
