// Package querycache answers repeated Finds of network services (NewNS) and network service
// endpoints (NewNSE) from memory, kept up to date by a watch, so that a component that looks the
// same services and endpoints up for every connection (an nsmgr, a forwarder) does not ask the
// registry each time. Both records get the same behaviour, written once.
//
// Finds without watch are cached by their exact query. The first Find of a query goes to the
// rest of the chain, and starts a watch of the same query on the rest of the chain, which keeps
// the query's entry: every record it reports is stored, every Deleted one dropped. Finds are
// answered from the entry (copies, sorted by name) once the watch has reported (as present or
// deleted) every record that the last Find passed on returned; until then they go to the rest
// of the chain as well, because a watch does not say when it has sent all current records. So a
// record registered, changed or removed reaches the answers as soon as the watch reports it,
// which is a moment after the registry took it. When the watch fails or ends, the entry is
// dropped and the next Find goes to the rest of the chain again (and starts a new watch). An
// entry not used for the idle time (WithIdleTimeout, 1 minute, on the clock of the context given
// to NewNS or NewNSE) is dropped and its watch stopped. Finds with watch, Register and Unregister
// pass through untouched.
//
// Each watch runs in a goroutine of its own on a context owned by the cache (the one given to
// NewNS or NewNSE, whose end stops them all): this is the one element with a goroutine per
// distinct query, because a watch is a stream that must be read while nobody calls Find.
//
// Querycache belongs in a client chain before heal (so that its watches heal too) and connect.
package querycache

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// Option configures querycache.
type Option func(*options)

type options struct {
	idle time.Duration
}

// WithIdleTimeout sets how long a query's entry (and its watch) lives without a Find.
func WithIdleTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("querycache: WithIdleTimeout needs a positive duration")
	}
	return func(o *options) { o.idle = d }
}

// NewNS returns querycache for network services; its watches end with ctx.
func NewNS(ctx context.Context, opts ...Option) next.NS {
	return newCache[*registry.NetworkService](ctx, opts)
}

// NewNSE returns querycache for network service endpoints; its watches end with ctx.
func NewNSE(ctx context.Context, opts ...Option) next.NSE {
	return newCache[*registry.NetworkServiceEndpoint](ctx, opts)
}

func newCache[R next.Record](ctx context.Context, opts []Option) *cache[R] {
	o := options{idle: time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	return &cache[R]{ctx: ctx, clock: clock.FromContext(ctx), idle: o.idle, entries: map[string]*entry[R]{}}
}

type cache[R next.Record] struct {
	ctx   context.Context
	clock clock.Clock
	idle  time.Duration

	mu      sync.Mutex
	entries map[string]*entry[R] // by query
}

// entry is one query's records, as its watch reported them.
type entry[R next.Record] struct {
	records map[string]R        // by name; never changed, replaced
	passed  bool                // a Find passed on has returned
	pending map[string]struct{} // names it returned that the watch has not reported since
	used    time.Time
	stop    context.CancelFunc
	idle    clock.Timer
}

// ready tells whether the watch has reported every record the last Find passed on returned.
func (e *entry[R]) ready() bool { return e.passed && len(e.pending) == 0 }

func byName[R next.Record](a, b R) int { return strings.Compare(a.GetName(), b.GetName()) }

func (c *cache[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	if q.Watch {
		return next.Of[R](ctx).Find(ctx, q, send)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(q.Record)
	if err != nil {
		return next.Of[R](ctx).Find(ctx, q, send)
	}
	key := string(b)

	c.mu.Lock()
	e := c.entries[key]
	if e != nil && e.ready() {
		e.used = c.clock.Now()
		found := slices.SortedFunc(maps.Values(e.records), byName[R])
		c.mu.Unlock()
		for _, r := range found {
			if err := send(&next.Event[R]{Record: proto.CloneOf(r)}); err != nil {
				return err
			}
		}
		return nil
	}
	if e == nil && c.ctx.Err() == nil {
		e = c.watch(next.Of[R](ctx), key, q.Record)
	}
	c.mu.Unlock()

	names := []string{}
	err = next.Of[R](ctx).Find(ctx, q, func(ev *next.Event[R]) error {
		if !ev.Deleted {
			names = append(names, ev.Record.GetName())
		}
		return send(ev)
	})
	if err == nil && e != nil {
		c.mu.Lock()
		e.passed, e.pending = true, map[string]struct{}{}
		for _, name := range names {
			if _, ok := e.records[name]; !ok {
				e.pending[name] = struct{}{}
			}
		}
		c.mu.Unlock()
	}
	return err
}

// watch makes the entry of key and starts its watch on rest; c.mu is held.
func (c *cache[R]) watch(rest next.Element[R], key string, query R) *entry[R] {
	ctx, stop := context.WithCancel(c.ctx)
	e := &entry[R]{records: map[string]R{}, used: c.clock.Now(), stop: stop}
	c.entries[key] = e
	e.idle = c.clock.AfterFunc(c.idle, func() { c.expire(key, e) })
	q := &next.Query[R]{Record: proto.CloneOf(query), Watch: true}
	go func() {
		defer c.drop(key, e)
		_ = rest.Find(ctx, q, func(ev *next.Event[R]) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(e.pending, ev.Record.GetName())
			if ev.Deleted {
				delete(e.records, ev.Record.GetName())
			} else {
				e.records[ev.Record.GetName()] = proto.CloneOf(ev.Record)
			}
			return nil
		})
	}()
	return e
}

// expire drops e if it was not used for the idle time, else looks again when it would be.
func (c *cache[R]) expire(key string, e *entry[R]) {
	c.mu.Lock()
	left := c.idle - c.clock.Since(e.used)
	if left > 0 && c.entries[key] == e {
		e.idle = c.clock.AfterFunc(left, func() { c.expire(key, e) })
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.drop(key, e)
}

// drop forgets e and stops its watch and timer.
func (c *cache[R]) drop(key string, e *entry[R]) {
	c.mu.Lock()
	if c.entries[key] == e {
		delete(c.entries, key)
	}
	e.idle.Stop()
	c.mu.Unlock()
	e.stop()
}

func (c *cache[R]) Register(ctx context.Context, r R) (R, error) {
	return next.Of[R](ctx).Register(ctx, r)
}

func (c *cache[R]) Unregister(ctx context.Context, r R) error {
	return next.Of[R](ctx).Unregister(ctx, r)
}
