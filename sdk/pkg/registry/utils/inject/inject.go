// Package inject provides a registry test element that makes the rest of a chain fail on demand,
// for testing what an element does when a registry refuses a registration, cannot be reached, or
// breaks a watch. It is the registry twin of networkservice/utils/inject, written once for
// network services and endpoints.
//
// Register and Find fail before the rest of the chain sees them; Unregister, like Close there,
// is passed on and then fails, as a registry that removed the record but whose answer was lost.
// FailFinds also ends every Find already running through the element with its error, the way a
// registry that goes away breaks the watches open on it. Errors can be changed from any
// goroutine; nil lets calls through again.
package inject

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/networkservicemesh/api/pkg/api/registry"

	"vwire.dev/sdk/pkg/registry/core/next"
)

// Errors is an element that fails Register, Find and Unregister with the errors it is set to.
type Errors[R next.Record] struct {
	registerErr   atomic.Pointer[error]
	unregisterErr atomic.Pointer[error]

	mu      sync.Mutex
	findErr error
	running map[*context.CancelCauseFunc]struct{} // the Finds passing through now
}

// NewNS returns an element for network services that fails Register with registerErr (nil:
// pass through).
func NewNS(registerErr error) *Errors[*registry.NetworkService] {
	return newErrors[*registry.NetworkService](registerErr)
}

// NewNSE returns an element for network service endpoints that fails Register with registerErr
// (nil: pass through).
func NewNSE(registerErr error) *Errors[*registry.NetworkServiceEndpoint] {
	return newErrors[*registry.NetworkServiceEndpoint](registerErr)
}

func newErrors[R next.Record](registerErr error) *Errors[R] {
	e := &Errors[R]{running: map[*context.CancelCauseFunc]struct{}{}}
	e.FailRegisters(registerErr)
	return e
}

func load(p *atomic.Pointer[error]) error {
	if err := p.Load(); err != nil {
		return *err
	}
	return nil
}

// FailRegisters makes later Registers fail with err, or pass if err is nil.
func (e *Errors[R]) FailRegisters(err error) { e.registerErr.Store(&err) }

// FailUnregisters makes later Unregisters fail with err after passing them on, or pass if err
// is nil.
func (e *Errors[R]) FailUnregisters(err error) { e.unregisterErr.Store(&err) }

// FailFinds makes later Finds fail with err, and ends the Finds running through the element
// (watches, typically) with err; nil lets later Finds pass.
func (e *Errors[R]) FailFinds(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.findErr = err
	if err == nil {
		return
	}
	for cancel := range e.running {
		(*cancel)(err)
	}
}

// Register fails or passes the record on.
func (e *Errors[R]) Register(ctx context.Context, r R) (R, error) {
	if err := load(&e.registerErr); err != nil {
		var zero R
		return zero, err
	}
	return next.Of[R](ctx).Register(ctx, r)
}

// Find fails, or passes the query on until FailFinds ends it.
func (e *Errors[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	inner, cancel := context.WithCancelCause(ctx)
	e.mu.Lock()
	if err := e.findErr; err != nil {
		e.mu.Unlock()
		cancel(nil)
		return err
	}
	e.running[&cancel] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.running, &cancel)
		e.mu.Unlock()
		cancel(nil)
	}()
	err := next.Of[R](inner).Find(inner, q, send)
	if ctx.Err() == nil && inner.Err() != nil {
		return context.Cause(inner) // broken here, not by the caller
	}
	return err
}

// Unregister passes the record on, then fails if told to.
func (e *Errors[R]) Unregister(ctx context.Context, r R) error {
	err := next.Of[R](ctx).Unregister(ctx, r)
	if injected := load(&e.unregisterErr); injected != nil {
		return injected
	}
	return err
}
