// Package heal re-establishes a client's connection when the path under it breaks: when the
// next hop reports the connection DOWN, when the stream from the next hop is lost (it died or
// restarted), or when a data-path check the caller supplies fails (WithLivenessCheck).
//
// Heal listens to what the monitor client element learns about each connection from the next
// hop (monitor.Listen), over the one stream that element keeps per next hop: it opens none of
// its own. A next hop that dies breaks that stream, and every connection on it heals at once.
// It reacts at once: the first try is scheduled with no delay, and every try re-enters the chain
// through begin (begin.FromContext), serialized with the connection's other events. What breaks
// while a Request of the connection is on its way (a refresh, or a try of heal's own) is not
// lost to that Request's success: healing starts when the Request has returned. A try that fails
// is repeated after a wait that starts at 50ms and doubles up to 400ms (WithBackoff), for as long
// as the connection is open: heal stops on Close and when the context given to NewClient is
// done. The goal is a connection healed well under a second after a next hop died (DESIGN.md).
//
// What a try asks for:
//   - next hop reported DOWN, or the stream was lost: the same request again. A hop that
//     restarts on the same address takes it back; a hop that is alive heals its own part.
//   - after WithReselectAfter failed tries in a row (default 2), or when the liveness check
//     fails: reselection. The connection is first closed downstream (a Close through the rest
//     of the chain, with a fresh deadline, whatever it answers), then requested with state
//     RESELECT_REQUESTED and no network_service_endpoint_name and no mechanism, as NSM does, so
//     that the endpoint is chosen again and the mechanism negotiated again.
//
// Reselection tears down a vWire, so a try counts toward it only when the endpoint may be gone.
// A try that failed because a hop before the endpoint was away (dial.HopAway: an nsmgr or a
// forwarder restarting, or a restarted nsmgr whose forwarders have not registered again yet)
// does not count while healing is younger than WithHopAwayLimit (default 5s): the hops keep what
// they built, and the path comes back whole, its vWire having passed packets all along. Past
// that limit the hop is taken for gone, and such tries count. With WithFixedNextHop (a
// workload's client, whose next hop is its nsmgr), a try that failed because that hop could not
// be reached (dial.ErrUnreachable) never counts: reselection would go to the same hop.
//
// Reselection is asked of begin (begin.Reselect), which changes the request at its own place: in
// an nsmgr, whose client chain joins the server chain's begin, discovery before heal sees the
// request for a new endpoint too. A successful Request leaves the connection's state UP.
//
// Heal belongs in a client chain after begin and metadata, before dial and the monitor client
// (whose events it follows). It keeps no goroutine: tries and liveness checks run from clock
// timers (sdk/pkg/tools/clock, from the context).
package heal

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// tryTimeout bounds each heal try, and the Close that precedes a reselection.
const tryTimeout = 5 * time.Second

// LivenessCheck says whether a connection's data path works; ctx ends after one check interval.
type LivenessCheck func(ctx context.Context, conn *networkservice.Connection) bool

// Option configures heal.
type Option func(*options)

type options struct {
	check         LivenessCheck
	interval      time.Duration
	first, most   time.Duration
	reselectAfter int
	fixedNextHop  bool
	awayLimit     time.Duration
	provider      metric.MeterProvider
}

// WithLivenessCheck sets a data-path check, run every interval (WithLivenessInterval) while the
// connection is up; a failed check makes heal ask for reselection.
func WithLivenessCheck(check LivenessCheck) Option {
	return func(o *options) { o.check = check }
}

// WithLivenessInterval sets how often the liveness check runs (default 200ms, at least 1ms); a
// check gets as long as one interval to answer.
func WithLivenessInterval(d time.Duration) Option {
	return func(o *options) { o.interval = max(d, time.Millisecond) }
}

// WithBackoff sets the wait after the first failed try and the most the wait grows to (default
// 50ms and 400ms: a forwarder pod that replaces a dead one registers about a second later, and a
// longer wait would find it up to a whole wait after that). A first below 1ms is raised to 1ms, and most to at least first.
func WithBackoff(first, most time.Duration) Option {
	return func(o *options) {
		o.first = max(first, time.Millisecond)
		o.most = max(most, o.first)
	}
}

// WithReselectAfter sets after how many failed tries in a row heal asks for reselection
// (default 2; at least 1).
func WithReselectAfter(n int) Option {
	return func(o *options) { o.reselectAfter = max(n, 1) }
}

// WithFixedNextHop says that every Request of the chain goes to the same next hop (clienturl
// before heal): a try that failed because that hop could not be reached is tried again as it
// was, and never counts toward reselection.
func WithFixedNextHop() Option {
	return func(o *options) { o.fixedNextHop = true }
}

// DefaultHopAwayLimit is how long tries that failed because a hop before the endpoint was away
// do not count toward reselection, unless WithHopAwayLimit says otherwise: longer than an
// nsmgr's or a forwarder's restart, also as a container restarted by Kubernetes.
const DefaultHopAwayLimit = 5 * time.Second

// WithHopAwayLimit sets how long, from the start of healing, tries that failed because a hop
// before the endpoint was away (dial.HopAway) do not count toward reselection; 0 counts them
// all.
func WithHopAwayLimit(d time.Duration) Option {
	return func(o *options) { o.awayLimit = max(d, 0) }
}

// NewClient returns the heal client; it stops healing when ctx is done.
func NewClient(ctx context.Context, opts ...Option) networkservice.NetworkServiceClient {
	if ctx == nil {
		panic("heal.NewClient: nil ctx")
	}
	o := options{interval: 200 * time.Millisecond, first: 50 * time.Millisecond, most: 400 * time.Millisecond, reselectAfter: 2,
		awayLimit: DefaultHopAwayLimit}
	for _, opt := range opts {
		opt(&o)
	}
	return &client{ctx: ctx, options: o, metrics: newHealMetrics(o.provider)}
}

type client struct {
	ctx context.Context
	options
	metrics *healMetrics
}

var healerKey = metadata.NewKey[*healer]("heal")

// healer is one connection's heal state.
type healer struct {
	c      *client
	events begin.EventFactory
	clock  clock.Clock
	logger *slog.Logger

	mu       sync.Mutex
	closed   bool
	healing  bool // a try is scheduled or running
	reselect bool // the next Request asks for another endpoint
	failures int  // tries failed in a row
	counted  int  // of those, the ones that count toward reselection
	wait     time.Duration
	since    time.Time   // when healing began
	timer    clock.Timer // the next try, or the next liveness check
	conn     *networkservice.Connection
	// A Request is passing heal: what breaks meanwhile waits for its end (missed says why),
	// so that its success does not hide it.
	requesting     bool
	missed         string
	missedReselect bool
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	m := metadata.Client(ctx)
	h, ok := healerKey.Load(m)
	if !ok {
		h = c.newHealer(ctx)
		monitor.Listen(ctx, h.onEvent)
	}
	if ok && req.GetConnection().GetState() == networkservice.State_RESELECT_REQUESTED {
		if old := h.current(); old != nil {
			c.closeOld(ctx, old, opts)
		}
	}
	h.requestStarts()
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err != nil {
		h.requestFailed()
		return nil, err
	}
	conn.State = networkservice.State_UP
	h.up(conn)
	healerKey.Store(m, h)
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if h, ok := healerKey.LoadAndDelete(metadata.Client(ctx)); ok {
		h.close()
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func (c *client) newHealer(ctx context.Context) *healer {
	events := begin.FromContext(ctx)
	if events == nil {
		panic("heal: no begin before this element in the chain")
	}
	return &healer{c: c, events: events, clock: clock.FromContext(ctx), logger: log.FromContext(ctx)}
}

// closeOld closes the old path downstream before a reselecting Request builds a new one, so
// that the old endpoint and hops do not keep it until it times out.
func (c *client) closeOld(ctx context.Context, old *networkservice.Connection, opts []grpc.CallOption) {
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), tryTimeout)
	defer cancel()
	if _, err := next.Client(undo).Close(undo, old, opts...); err != nil {
		log.FromContext(ctx).Debug("heal: closing the old path before reselecting failed; going on", "error", err)
	}
}

// current returns the connection as last established, nil before that.
func (h *healer) current() *networkservice.Connection {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return nil
	}
	return h.conn.Clone()
}

// requestStarts notes that a Request is on its way through heal.
func (h *healer) requestStarts() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requesting = true
}

// requestFailed ends a Request that failed, and starts healing for what broke meanwhile.
func (h *healer) requestFailed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requesting = false
	h.startMissed()
}

// up records a successful Request: healing is over, and the liveness check starts again; or,
// if the path broke again while the Request was on its way (the monitor client hands on what it
// learned then at the Request's end), healing starts again.
func (h *healer) up(conn *networkservice.Connection) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requesting = false
	if h.healing {
		h.logger.Info("heal: connection healed", "connection", conn.GetId(), "tries", h.failures+1, "reselected", h.reselect)
		h.c.metrics.healed(h.c.ctx, conn.GetNetworkService(), h.clock.Since(h.since), h.reselect)
	}
	h.healing, h.reselect, h.failures, h.counted = false, false, 0, 0
	h.conn = conn.Clone()
	h.stopTimer()
	if h.startMissed() {
		return
	}
	if h.c.check != nil {
		h.after(h.c.interval, h.probe)
	}
}

// startMissed starts healing for what broke while a Request was on its way, if anything did and
// the connection was up before; the caller holds h.mu.
func (h *healer) startMissed() bool {
	why, reselect := h.missed, h.missedReselect
	h.missed, h.missedReselect = "", false
	if why == "" || h.conn == nil {
		return false
	}
	h.begin(reselect, why)
	return true
}

func (h *healer) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.stopTimer()
}

// after replaces the pending timer with one calling fn after d; the caller holds h.mu.
func (h *healer) after(d time.Duration, fn func()) {
	h.stopTimer()
	h.timer = h.clock.AfterFunc(d, fn)
}

// stopTimer stops the pending timer, if any; the caller holds h.mu.
func (h *healer) stopTimer() {
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
}

// onEvent is the connection's monitor listener: it starts healing when the next hop reports
// the connection DOWN or the stream from it is lost.
func (h *healer) onEvent(e monitor.Event) {
	switch {
	case e.Err != nil && status.Code(e.Err) == codes.Unimplemented:
		h.logger.Debug("heal: the next hop serves no MonitorConnection; only liveness checks and refresh apply")
	case e.Err != nil:
		h.start(false, "lost the next hop's monitor stream: "+e.Err.Error())
	case e.Conn.GetState() == networkservice.State_DOWN:
		h.start(false, "the next hop reports the connection down")
	}
}

// start begins healing, unless it is already under way; while a Request is on its way, once
// that Request ended.
func (h *healer) start(reselect bool, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.requesting {
		h.missed, h.missedReselect = why, h.missedReselect || reselect
		return
	}
	h.begin(reselect, why)
}

// begin begins healing, unless it is already under way; the caller holds h.mu.
func (h *healer) begin(reselect bool, why string) {
	if h.closed || h.c.ctx.Err() != nil {
		return
	}
	h.reselect = h.reselect || reselect
	if h.healing {
		return
	}
	h.logger.Warn("heal: healing", "connection", h.conn.GetId(), "why", why, "reselect", h.reselect)
	h.healing, h.failures, h.counted, h.wait, h.since = true, 0, 0, h.c.first, h.clock.Now()
	h.c.metrics.started(h.c.ctx, h.conn.GetNetworkService())
	h.after(0, h.try)
}

// try is one heal attempt, run from a timer.
func (h *healer) try() {
	h.mu.Lock()
	if h.closed || !h.healing || h.c.ctx.Err() != nil {
		h.mu.Unlock()
		return
	}
	var opts []begin.RequestOption
	if h.reselect {
		opts = append(opts, begin.Reselect())
	}
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(h.c.ctx, tryTimeout)
	err := h.events.Request(ctx, opts...)
	cancel()

	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil || !h.healing: // healed, by this try or another Request
		h.c.metrics.tried(h.c.ctx, h.conn.GetNetworkService(), err)
	case errors.Is(err, begin.ErrForgotten) || h.closed || h.c.ctx.Err() != nil:
		h.healing = false
	default:
		h.c.metrics.tried(h.c.ctx, h.conn.GetNetworkService(), err)
		h.failures++
		if h.counts(err) {
			h.counted++
		}
		if h.counted >= h.c.reselectAfter {
			h.reselect = true
		}
		h.logger.Warn("heal: try failed", "connection", h.conn.GetId(), "tries", h.failures, "next in", h.wait,
			"reselect next", h.reselect, "error", err)
		h.after(h.wait, h.try)
		h.wait = min(2*h.wait, h.c.most)
	}
}

// counts tells whether a failed try counts toward reselection; the caller holds h.mu.
func (h *healer) counts(err error) bool {
	switch {
	case h.c.fixedNextHop && errors.Is(err, dial.ErrUnreachable):
		return false
	case dial.HopAway(err):
		return h.clock.Since(h.since) >= h.c.awayLimit
	}
	return true
}

// probe runs the liveness check, from a timer.
func (h *healer) probe() {
	h.mu.Lock()
	if h.closed || h.healing || h.c.ctx.Err() != nil {
		h.mu.Unlock()
		return
	}
	conn := h.conn.Clone()
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(h.c.ctx, h.c.interval)
	alive := h.c.check(ctx, conn)
	cancel()

	if !alive {
		h.start(true, "the liveness check failed")
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed && !h.healing {
		h.after(h.c.interval, h.probe)
	}
}
