// Package refresh registers a network service endpoint again before its registration expires,
// so that an endpoint stays in the registry for as long as it runs.
//
// After a successful Register, the element sets a timer (the clock from the context, a runtime
// timer, no goroutine until it fires) to a third of the lifetime the registry granted (the
// returned expiration_time minus now). A third leaves two thirds of the lifetime for a refresh
// that fails to be tried again (heal retries one that failed with Unavailable) before the
// registry expires the endpoint: with the registry's default of a minute, an outage of up to 40
// seconds goes unnoticed, for three registrations a minute.
//
// A refresh registers, through begin, the record as it last came to this element but without
// expiration_time, so that the registry grants its default lifetime again (as NSM's refresh
// does; an expiration_time the caller gave holds for its own Register only, and would not move
// if sent again). Every Register replaces the timer, a refresh included; Unregister stops it,
// and so does the end of the context given to NewNSE. A failed Register leaves a pending timer
// as it is; a failed refresh is logged and not repeated here: the endpoint stays registered
// until its expiration_time, and heal, before refresh in the chain, retries it when the registry
// was unreachable. A registration returned without expiration_time does not expire and is not
// refreshed.
//
// Refresh belongs in an endpoint's registry client chain after begin (it refuses to work
// without it, with Internal) and heal.
package refresh

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

type nse = registry.NetworkServiceEndpoint

// attemptTimeout bounds one refresh.
const attemptTimeout = 15 * time.Second

// NewNSE returns refresh for network service endpoints; refreshing stops when ctx ends.
func NewNSE(ctx context.Context) next.NSE {
	return &refresh{ctx: ctx, timers: map[string]func(){}}
}

type refresh struct {
	ctx    context.Context
	mu     sync.Mutex
	timers map[string]func() // name -> stop of its next refresh
}

func (r *refresh) Register(ctx context.Context, in *nse) (*nse, error) {
	factory := begin.FromContext[*nse](ctx)
	if factory == nil {
		return nil, status.Error(codes.Internal, "refresh: no begin before refresh in the chain; put begin.NewNSE() before it")
	}
	c := clock.FromContext(ctx)
	again := in.Clone()
	again.ExpirationTime = nil

	got, err := next.Of[*nse](ctx).Register(ctx, in)
	if err != nil {
		return nil, err
	}

	var stop func()
	if exp := got.GetExpirationTime(); exp != nil && r.ctx.Err() == nil {
		stop = begin.After(r.ctx, c, c.Until(exp.AsTime())/3, func(ctx context.Context) {
			// A fixed bound, not the time left: a timer that fires late still registers again,
			// which brings back a registration that expired meanwhile.
			ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
			defer cancel()
			err := factory.Register(ctx, again)
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, begin.ErrForgotten) {
				log.FromContext(ctx).Warn("refresh: registering the endpoint again failed", "nse", again.GetName(), "error", err)
			}
		})
	}
	r.replace(in.GetName(), stop)
	return got, nil
}

func (r *refresh) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (r *refresh) Unregister(ctx context.Context, in *nse) error {
	r.replace(in.GetName(), nil)
	return next.Of[*nse](ctx).Unregister(ctx, in)
}

// replace makes stop (nil: none) the stop of the next refresh of name, and stops the one it
// replaces.
func (r *refresh) replace(name string, stop func()) {
	r.mu.Lock()
	old := r.timers[name]
	if stop != nil {
		r.timers[name] = stop
	} else {
		delete(r.timers, name)
	}
	r.mu.Unlock()
	if old != nil {
		old()
	}
}
