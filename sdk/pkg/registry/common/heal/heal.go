// Package heal brings a client's registrations and watches back after the remote registry
// restarted or was unreachable for a while, without the caller doing anything.
//
// A registry that broke answers Unavailable (it stopped, or cannot be reached) or Canceled while
// the caller's context is alive: a registry that dies can end the streams open on it with
// Canceled, a proxy in front of it passes on the cancel of its own call, and a closed
// grpc.ClientConn answers Canceled too. Heal takes both as a broken registry to come back from;
// only the end of the caller's own context (or of the one given to NewNS or NewNSE, for
// background work) makes it stop.
//
// Registrations: heal remembers every record registered through it (the record as it passed it
// on) until it is unregistered. When a Register of a remembered name fails because the registry
// broke (an endpoint's refresh, typically, or the caller's own update), heal registers the last
// record that was registered successfully again through begin, after 50 ms, then twice as long
// after each failure up to 2 s (WithBackoff), until it succeeds, the name is unregistered, or the
// context given to NewNS or NewNSE ends; each attempt has a deadline of 10 s. When one of the
// watches through heal broke and the registry answers again, heal registers every remembered
// record again, all at once, because a registry that restarted lost them; refresh brings
// endpoint registrations back too, within a third of their lifetime, when no watch notices.
//
// Watches (Find with watch): when the stream fails because the registry broke, or ends while the
// caller's context has not, heal opens it again, with the same backoff, until it stands again or
// the caller's context ends. The caller sees one unbroken stream. On the way back heal waits until
// the registry answers a Find without watch of the query, registers the remembered records
// again (if it has any) and asks for the query's records once more, sends Deleted for the
// records the caller saw that are gone and the records that are new or changed, then re-opens
// the watch. Records the caller already has unchanged are not sent again: heal keeps the last
// record it sent per name and drops events that change nothing (Deleted events for records never
// sent included). A record deleted in the instant between that Find and the re-opened watch
// stays with the caller until its name is registered or deleted again. Other errors, and the
// caller's own, end the Find as they are. Finds without watch, and Unregister, pass through
// (Unregister after heal forgot the name).
//
// Heal belongs in a client chain after begin (Register refuses to work without it, with
// Internal) and querycache, and before refresh, so that a refresh that fails passes back
// through it; the grpc.ClientConn under connect should reconnect quickly (a short connect
// backoff), or heal's attempts fail fast until gRPC's own backoff lets them through.
package heal

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// attemptTimeout bounds each background Register.
const attemptTimeout = 10 * time.Second

// Option configures heal.
type Option func(*options)

type options struct {
	first, max time.Duration
}

// WithBackoff sets the wait before the first retry and the most any wait grows to (doubling).
func WithBackoff(first, most time.Duration) Option {
	if first <= 0 || most < first {
		panic("heal: WithBackoff needs 0 < first <= most")
	}
	return func(o *options) { o.first, o.max = first, most }
}

// NewNS returns heal for network services; its background work ends with ctx.
func NewNS(ctx context.Context, opts ...Option) next.NS {
	return newHeal[*registry.NetworkService](ctx, opts)
}

// NewNSE returns heal for network service endpoints; its background work ends with ctx.
func NewNSE(ctx context.Context, opts ...Option) next.NSE {
	return newHeal[*registry.NetworkServiceEndpoint](ctx, opts)
}

type heal[R next.Record] struct {
	ctx context.Context
	options

	mu    sync.Mutex
	regs  map[string]*registration[R]
	round chan struct{} // closed when the running re-registration of all records ends; nil: none runs
}

func newHeal[R next.Record](ctx context.Context, opts []Option) *heal[R] {
	h := &heal[R]{ctx: ctx, options: options{first: 50 * time.Millisecond, max: 2 * time.Second}, regs: map[string]*registration[R]{}}
	for _, opt := range opts {
		opt(&h.options)
	}
	return h
}

// registration is a remembered record and its pending retry.
type registration[R next.Record] struct {
	factory  begin.EventFactory[R]
	record   R // as last passed on; never changed
	clock    clock.Clock
	run      context.Context // ends when the registration is replaced or forgotten
	withdraw context.CancelFunc
	retry    clock.Timer // set while a retry is pending
	delay    time.Duration
}

// stop ends the registration's background work; h.mu is held.
func (g *registration[R]) stop() {
	if g.retry != nil {
		g.retry.Stop()
	}
	g.withdraw()
}

// again registers the record once more through begin.
func (g *registration[R]) again() error {
	ctx, cancel := context.WithTimeout(g.run, attemptTimeout)
	defer cancel()
	return g.factory.Register(ctx, proto.Clone(g.record).(R))
}

// broken tells whether err, answered to a call whose context is ctx, means the registry broke
// (see the package comment) rather than the caller giving up.
func broken(ctx context.Context, err error) bool {
	switch {
	case status.Code(err) == codes.Unavailable:
		return true
	case status.Code(err) == codes.Canceled, errors.Is(err, context.Canceled):
		return ctx.Err() == nil
	}
	return false
}

func (h *heal[R]) Register(ctx context.Context, r R) (R, error) {
	factory := begin.FromContext[R](ctx)
	if factory == nil {
		var zero R
		return zero, status.Error(codes.Internal, "heal: no begin before heal in the chain; put begin before it")
	}
	saved := proto.Clone(r).(R)
	got, err := next.Of[R](ctx).Register(ctx, r)
	switch {
	case err == nil:
		h.remember(saved, factory, clock.FromContext(ctx))
	case broken(ctx, err):
		h.retryLater(saved.GetName())
	}
	return got, err
}

func (h *heal[R]) remember(r R, factory begin.EventFactory[R], c clock.Clock) {
	run, withdraw := context.WithCancel(h.ctx)
	g := &registration[R]{factory: factory, record: r, clock: c, run: run, withdraw: withdraw, delay: h.first}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.regs[r.GetName()]; old != nil {
		old.stop()
	}
	h.regs[r.GetName()] = g
}

// retryLater schedules a retry of a remembered name, unless one is pending.
func (h *heal[R]) retryLater(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.regs[name]
	if g == nil || g.retry != nil || g.run.Err() != nil {
		return
	}
	wait := g.delay
	g.delay = min(2*g.delay, h.max)
	g.retry = g.clock.AfterFunc(wait, func() {
		h.mu.Lock()
		g.retry = nil
		h.mu.Unlock()
		// Success replaces g; a broken registry's answer passes through Register, which
		// schedules the next try.
		err := g.again()
		if err != nil && g.run.Err() == nil && !broken(g.run, err) && !errors.Is(err, begin.ErrForgotten) {
			log.FromContext(g.run).Warn("heal: registering again failed; giving up", "name", name, "error", err)
		}
	})
}

func (h *heal[R]) Unregister(ctx context.Context, r R) error {
	h.mu.Lock()
	if g := h.regs[r.GetName()]; g != nil {
		g.stop()
		delete(h.regs, r.GetName())
	}
	h.mu.Unlock()
	return next.Of[R](ctx).Unregister(ctx, r)
}

// reRegister registers every remembered record again, or waits for a run that started before.
func (h *heal[R]) reRegister(ctx context.Context) {
	h.mu.Lock()
	if running := h.round; running != nil {
		h.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
		}
		return
	}
	done := make(chan struct{})
	h.round = done
	regs := make([]*registration[R], 0, len(h.regs))
	for _, g := range h.regs {
		regs = append(regs, g)
	}
	h.mu.Unlock()

	var wg sync.WaitGroup
	for _, g := range regs {
		wg.Go(func() { _ = g.again() }) // a failure schedules its own retry
	}
	wg.Wait()
	h.mu.Lock()
	h.round = nil
	h.mu.Unlock()
	close(done)
}

func (h *heal[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	if !q.Watch {
		return next.Of[R](ctx).Find(ctx, q, send)
	}
	w := &watch[R]{seen: map[string]R{}, send: send}
	for {
		err := next.Of[R](ctx).Find(ctx, q, w.deliver)
		switch {
		case w.sendErr != nil:
			return w.sendErr
		case ctx.Err() != nil:
			return err
		case err != nil && !broken(ctx, err):
			return err
		}
		log.FromContext(ctx).Warn("heal: a watch of the registry broke; opening it again", "error", err)
		if err := h.resync(ctx, q, w); err != nil {
			return err
		}
		log.FromContext(ctx).Info("heal: the watch of the registry stands again")
	}
}

// resync waits until the registry answers again, registers the remembered records again, and
// brings the caller's view up to the query's current records.
func (h *heal[R]) resync(ctx context.Context, q *next.Query[R], w *watch[R]) error {
	c := clock.FromContext(ctx)
	for delay := h.first; ; delay = min(2*delay, h.max) {
		if err := sleep(ctx, c, delay); err != nil {
			return err
		}
		current, err := h.current(ctx, q)
		if err == nil && h.remembered() {
			h.reRegister(ctx)
			current, err = h.current(ctx, q)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case broken(ctx, err):
			continue
		case err != nil:
			return err
		}
		still := map[string]bool{}
		for _, r := range current {
			still[r.GetName()] = true
		}
		for _, name := range slices.Sorted(maps.Keys(w.seen)) {
			if !still[name] {
				if err := w.deliver(&next.Event[R]{Record: w.seen[name], Deleted: true}); err != nil {
					return err
				}
			}
		}
		for _, r := range current {
			if err := w.deliver(&next.Event[R]{Record: r}); err != nil {
				return err
			}
		}
		return nil
	}
}

// current returns the records matching q now, as the rest of the chain finds them.
func (h *heal[R]) current(ctx context.Context, q *next.Query[R]) ([]R, error) {
	var found []R
	err := next.Of[R](ctx).Find(ctx, &next.Query[R]{Record: q.Record}, func(ev *next.Event[R]) error {
		found = append(found, ev.Record)
		return nil
	})
	return found, err
}

func (h *heal[R]) remembered() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.regs) > 0
}

// watch is what the caller of one watching Find has seen.
type watch[R next.Record] struct {
	seen    map[string]R // the last record sent per name, a copy
	send    func(*next.Event[R]) error
	sendErr error
}

// deliver sends ev unless it changes nothing the caller has.
func (w *watch[R]) deliver(ev *next.Event[R]) error {
	name := ev.Record.GetName()
	old, had := w.seen[name]
	switch {
	case ev.Deleted && !had, !ev.Deleted && had && proto.Equal(old, ev.Record):
		return nil
	case ev.Deleted:
		delete(w.seen, name)
	default:
		w.seen[name] = proto.Clone(ev.Record).(R)
	}
	w.sendErr = w.send(ev)
	return w.sendErr
}

// sleep waits d on c, or until ctx ends.
func sleep(ctx context.Context, c clock.Clock, d time.Duration) error {
	done := make(chan struct{})
	t := c.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
