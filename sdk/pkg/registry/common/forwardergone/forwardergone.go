// Package forwardergone notices a forwarder of the node that is gone for good, tells the
// nsmgr's caller so that what the forwarder built on the node can be removed, and unregisters it
// so that the nsmgr stops choosing it.
//
// Why: a kernel forwarder that dies and does not come back leaves its veths, tunnels, tc filters
// and socket files on its node for good; nothing else on the node learns that it is gone. Its
// nsmgr does: the forwarder registered with it over a gRPC transport, and a process that dies
// takes its sockets with it (orphan's stats handler tags each transport and signals its end).
//
// A forwarder is gone for good when
//   - the transport of its registration ends and it does not register again over another
//     within the grace (WithGrace, default orphan.DefaultGrace): a forwarder that is alive and
//     lost its transport (its nsmgr restarted) registers again at once; or
//   - it is unregistered (a forwarder stopped with SIGTERM leaves its vWires to a successor, an
//     expired registration) and no forwarder registers under its name within the grace. A
//     successor under another name (a new pod of a DaemonSet) is the hook's to recognise: the
//     element does not know where forwarders live (cmd-nsmgr compares network namespaces).
//
// The nsmgr's caller follows each forwarder through a Watch, called while the forwarder is
// alive (at its first Register over each transport), because where a forwarder lived can only
// be learned from the living process; the Watched it returns is told Gone once the forwarder is
// gone for good, before the element unregisters it, and is closed when the registration it
// watched ends in any way. Watch and Gone run on the caller's and a timer's goroutine: the
// element keeps no goroutine of its own (context.AfterFunc on the transport, clock timers).
// Gone is not serialized with a registration of the same name that arrives just as the grace
// ends (the hook checks that no live forwarder shares the place it sweeps), but the Unregister
// after it is: a Register of the name that gets its turn first withdraws it.
//
// It belongs in the nsmgr's chain of forwarder registrations, after begin (whose EventFactory
// unregisters a gone forwarder) and after the passed sockets are kept (registry/common/recvfd,
// whose table it reads), on a server that serves with orphan.StatsHandler. Registrations that
// come over no transport (calls within the process) are not watched.
package forwardergone

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/orphan"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/log"
)

type nse = registry.NetworkServiceEndpoint

// Watch is called when a forwarder registers over a transport it had not registered over
// before, while its process is alive, with the socket it passed by descriptor (nil when it
// registered by path; valid during the call only). What it returns follows that registration;
// nil follows nothing.
type Watch func(ctx context.Context, fwd *nse, socket *os.File) Watched

// Watched follows one forwarder registration for the nsmgr's caller.
type Watched interface {
	// Gone is called once the forwarder is gone for good, before it is unregistered.
	Gone(ctx context.Context)
	// Close lets go of what Watch kept: once, after Gone or when the registration ended
	// otherwise (the forwarder registered again, the element's context ended).
	Close()
}

// Option configures the element.
type Option func(*options)

type options struct {
	grace time.Duration
}

// unregisterTimeout bounds the Unregister of a forwarder gone for good, the wait for its turn
// included.
const unregisterTimeout = 15 * time.Second

// WithGrace sets how long a forwarder may stay away (its transport ended, or unregistered)
// before it is gone for good (default orphan.DefaultGrace).
func WithGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// NewNSE returns the element: sockets is the table the passed sockets are kept in, watch the
// caller's hook (nil: a gone forwarder is only unregistered). Its timers stop when ctx ends.
func NewNSE(ctx context.Context, sockets *fdpass.Sockets, watch Watch, opts ...Option) next.NSE {
	if sockets == nil {
		panic("forwardergone: NewNSE needs the table of passed sockets, got nil")
	}
	o := options{grace: orphan.DefaultGrace}
	for _, opt := range opts {
		opt(&o)
	}
	if watch == nil {
		watch = func(context.Context, *nse, *os.File) Watched { return nil }
	}
	f := &element{ctx: ctx, options: o, sockets: sockets, watch: watch, names: map[string]*forwarder{}, withdraw: map[string]*context.CancelFunc{}}
	context.AfterFunc(ctx, f.stopAll)
	return f
}

type element struct {
	ctx context.Context
	options
	sockets *fdpass.Sockets
	watch   Watch

	mu    sync.Mutex
	names map[string]*forwarder
	// withdraw cancels the Unregister of a forwarder gone for good that waits for its turn,
	// when a forwarder registers under its name first.
	withdraw map[string]*context.CancelFunc
}

// forwarder is the watch over one registration of a forwarder.
type forwarder struct {
	name      string
	transport context.Context // of its registration; nil once it unregistered
	watched   Watched

	mu        sync.Mutex
	stopped   bool
	stopEnded func() bool // the AfterFunc on the transport's end
	stopGrace func()      // the grace, once it started
}

func (f *element) Register(ctx context.Context, fwd *nse) (*nse, error) {
	events := begin.FromContext[*nse](ctx)
	if events == nil {
		return nil, status.Error(codes.Internal, "forwardergone: no begin before forwardergone in the chain; put begin.NewNSE() before it")
	}
	f.mu.Lock()
	if cancel := f.withdraw[fwd.GetName()]; cancel != nil {
		(*cancel)() // this Register holds the name's turn: that Unregister has not begun
		delete(f.withdraw, fwd.GetName())
	}
	f.mu.Unlock()
	got, err := next.Of[*nse](ctx).Register(ctx, fwd)
	t := orphan.Transport(ctx)
	if err != nil || t == nil {
		return got, err
	}
	f.mu.Lock()
	old := f.names[fwd.GetName()]
	f.mu.Unlock()
	if old != nil && old.transport == t {
		return got, nil // a refresh, or the component's own event with its caller's values
	}
	w := &forwarder{name: fwd.GetName(), transport: t, watched: f.watch(ctx, got, f.sockets.Get(got.GetUrl()))}
	f.mu.Lock()
	old = f.names[w.name]
	f.names[w.name] = w
	f.mu.Unlock()
	if old != nil {
		old.stop() // came back: not gone
	}
	logger := log.FromContext(ctx)
	c := clock.FromContext(ctx)
	parent := context.WithoutCancel(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopEnded = context.AfterFunc(t, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		w.stopGrace = begin.After(parent, c, f.grace, func(ctx context.Context) { f.gone(ctx, w, events, logger) })
	})
	return got, nil
}

func (f *element) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

// Unregister starts the grace of a forwarder that is unregistered while watched: unless it
// registers again under its name, it is gone for good.
func (f *element) Unregister(ctx context.Context, fwd *nse) error {
	if err := next.Of[*nse](ctx).Unregister(ctx, fwd); err != nil {
		return err
	}
	f.mu.Lock()
	w := f.names[fwd.GetName()]
	f.mu.Unlock()
	if w == nil {
		return nil // not watched, or gone already (this is the element's own Unregister)
	}
	logger := log.FromContext(ctx)
	c := clock.FromContext(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.transport == nil {
		return nil
	}
	w.transport = nil
	w.stopEnded()
	if w.stopGrace != nil { // its transport had ended too: the grace starts again from now
		w.stopGrace()
	}
	w.stopGrace = begin.After(context.WithoutCancel(ctx), c, f.grace, func(ctx context.Context) { f.gone(ctx, w, nil, logger) })
	return nil
}

// gone tells the hook that w's forwarder is gone for good, then unregisters it through events
// (nil: it is unregistered already).
func (f *element) gone(ctx context.Context, w *forwarder, events begin.EventFactory[*nse], logger *slog.Logger) {
	f.mu.Lock()
	current := f.names[w.name] == w && ctx.Err() == nil
	if current {
		delete(f.names, w.name)
	}
	f.mu.Unlock()
	if !current {
		return // it came back, or the element stops
	}
	defer w.close()
	logger.Info("forwardergone: forwarder gone for good: it did not register again within the grace", "forwarder", w.name, "grace", f.grace)
	if w.watched != nil {
		w.watched.Gone(ctx)
	}
	if events == nil {
		return
	}
	unregistering, cancel := context.WithTimeout(ctx, unregisterTimeout)
	defer cancel()
	f.mu.Lock()
	back := f.names[w.name] != nil
	if !back {
		f.withdraw[w.name] = &cancel
	}
	f.mu.Unlock()
	if back {
		return // registered again while the hook ran
	}
	defer func() {
		f.mu.Lock()
		if f.withdraw[w.name] == &cancel {
			delete(f.withdraw, w.name)
		}
		f.mu.Unlock()
	}()
	if err := events.Unregister(unregistering); err != nil && !errors.Is(err, begin.ErrForgotten) && !errors.Is(err, context.Canceled) {
		logger.Warn("forwardergone: unregistering a forwarder gone for good failed; it expires later", "forwarder", w.name, "error", err)
	}
}

// stop ends the watch of a registration that did not end in its forwarder's death.
func (w *forwarder) stop() {
	w.mu.Lock()
	w.stopped = true
	if w.stopEnded != nil {
		w.stopEnded()
	}
	if w.stopGrace != nil {
		w.stopGrace()
	}
	w.mu.Unlock()
	w.close()
}

func (w *forwarder) close() {
	if w.watched != nil {
		w.watched.Close()
	}
}

// stopAll ends every watch when the element's context ends.
func (f *element) stopAll() {
	f.mu.Lock()
	all := f.names
	f.names = map[string]*forwarder{}
	f.mu.Unlock()
	for _, w := range all {
		w.stop()
	}
}
