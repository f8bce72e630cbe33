// Package expire unregisters a network service endpoint whose expiration_time has passed, so
// that an endpoint that stopped refreshing its registration leaves the registry by itself.
//
// Before next, an endpoint registered without expiration_time gets one: now plus the default
// lifetime (WithDefaultLifetime, 1 minute); one whose expiration_time has already passed is
// refused with InvalidArgument. After a successful Register, a timer (the clock from the context,
// a runtime timer, no goroutine until it fires) is set to the expiration_time the rest of the
// chain returned; a Register of the same name moves it and an Unregister stops it. A failed
// Register leaves the previous timer, because the previous registration still stands.
//
// When the timer fires, the endpoint is unregistered through begin, serialized with the
// endpoint's other events and with the values of its last Register, under a fresh deadline
// (WithUnregisterTimeout, 15 seconds); so the store deletes it and its watchers see Deleted.
// A Register that got its turn first withdraws the expiry.
//
// Expire belongs in a registry server chain after begin (it refuses to work without it, with
// Internal) and before the store.
package expire

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

type nse = registry.NetworkServiceEndpoint

// Option configures expire.
type Option func(*options)

type options struct {
	lifetime, unregisterTimeout time.Duration
}

// WithDefaultLifetime sets how long an endpoint registered without expiration_time lives.
func WithDefaultLifetime(d time.Duration) Option {
	if d <= 0 {
		panic("expire: WithDefaultLifetime needs a positive duration")
	}
	return func(o *options) { o.lifetime = d }
}

// WithUnregisterTimeout sets the deadline of the Unregister of an expired endpoint.
func WithUnregisterTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("expire: WithUnregisterTimeout needs a positive duration")
	}
	return func(o *options) { o.unregisterTimeout = d }
}

// NewNSE returns expire for network service endpoints.
func NewNSE(opts ...Option) next.NSE {
	o := options{lifetime: time.Minute, unregisterTimeout: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return &expire{options: o, timers: map[string]*expiry{}}
}

type expire struct {
	options
	mu     sync.Mutex
	timers map[string]*expiry
}

// expiry is the pending Unregister of one registration.
type expiry struct{ stop func() }

func (x *expire) Register(ctx context.Context, in *nse) (*nse, error) {
	factory := begin.FromContext[*nse](ctx)
	if factory == nil {
		return nil, status.Error(codes.Internal, "expire: no begin before expire in the chain; put begin.NewNSE() before it")
	}
	c := clock.FromContext(ctx)
	in = in.Clone()
	switch exp := in.GetExpirationTime(); {
	case exp == nil:
		in.ExpirationTime = timestamppb.New(c.Now().Add(x.lifetime))
	case !exp.AsTime().After(c.Now()):
		return nil, status.Errorf(codes.InvalidArgument,
			"expire: expiration_time %s of %q has passed (now %s); leave it empty for a lifetime of %s",
			exp.AsTime().Format(time.RFC3339), in.GetName(), c.Now().Format(time.RFC3339), x.lifetime)
	}

	got, err := next.Of[*nse](ctx).Register(ctx, in)
	if err != nil {
		return nil, err
	}

	name, when := in.GetName(), in.GetExpirationTime().AsTime()
	if got.GetExpirationTime() != nil {
		when = got.GetExpirationTime().AsTime()
	}
	e := &expiry{}
	e.stop = begin.After(context.WithoutCancel(ctx), c, c.Until(when), func(ctx context.Context) {
		unregister, cancel := context.WithTimeout(ctx, x.unregisterTimeout)
		defer cancel()
		// Withdrawn (a newer Register came first) or already unregistered: nothing to say.
		if err := factory.Unregister(unregister); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, begin.ErrForgotten) {
			log.FromContext(ctx).Warn("expire: unregistering an expired endpoint failed", "nse", name, "error", err)
		}
		x.drop(name, e)
	})
	x.mu.Lock()
	old := x.timers[name]
	x.timers[name] = e
	x.mu.Unlock()
	if old != nil {
		old.stop()
	}
	return got, nil
}

func (x *expire) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (x *expire) Unregister(ctx context.Context, in *nse) error {
	x.mu.Lock()
	e := x.timers[in.GetName()]
	delete(x.timers, in.GetName())
	x.mu.Unlock()
	if e != nil {
		e.stop()
	}
	return next.Of[*nse](ctx).Unregister(ctx, in)
}

// drop forgets e, which has fired, if it is still the expiry of name (an Unregister that did
// not reach this element leaves it).
func (x *expire) drop(name string, e *expiry) {
	x.mu.Lock()
	if x.timers[name] == e {
		delete(x.timers, name)
	}
	x.mu.Unlock()
}
