// Package refresh re-requests a connection before the token this hop gave the next one
// expires, so that the next hop keeps the connection instead of timing it out.
//
// After each successful Request the element reads the expiry of this hop's own path segment
// (path.path_segments[path.index].expires, written by updatetoken) and sets a timer (the clock
// from the context, no goroutine) to repeat the last Request through begin when a fraction of
// the remaining lifetime has passed. The fraction is 1/4 for the first hop of a path, growing
// with the hop's place to just under 0.35 for the last:
//   - at most 0.35, so that a refresh that fails is tried again after the same interval and two
//     tries always fit before the token expires (three for the first hop);
//   - smaller for outer hops, because a refresh from a client travels the whole path and renews
//     every hop's token on its way: when each hop waits a little longer than the one before it,
//     one refresh from the client serves the whole path instead of one refresh per hop. (NSM
//     refreshes at 1/3 of the remaining lifetime, spread the same way between 0.2 and 0.4.)
//
// A new Request, foreground or background, replaces the timer; Close stops it. A failed
// Request keeps a pending timer; when it was the refresh itself that failed, the next try is one
// interval later, as long as that is before the expiry; after that the next hop times the
// connection out, and heal, told by the next hop's monitor, takes over. A connection whose
// segment has no expiry is not refreshed.
//
// Refresh belongs in a client chain after begin and metadata, and before updatetoken (whose
// expiry it reads when the Request returns).
package refresh

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// schedule is one connection's refresh timer.
type schedule struct {
	timer   clock.Timer
	expires time.Time     // of this hop's token, as of the last successful Request
	every   time.Duration // between tries
	fired   atomic.Bool   // the timer went off: a refresh is running or waiting for its turn
}

var scheduleKey = metadata.NewKey[*schedule]("refresh")

// NewClient returns the refresh client; timers set after ctx is done do nothing.
func NewClient(ctx context.Context) networkservice.NetworkServiceClient {
	if ctx == nil {
		panic("refresh.NewClient: nil ctx")
	}
	return &client{ctx: ctx}
}

type client struct {
	ctx context.Context
}

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	m := metadata.Client(ctx)
	old, _ := scheduleKey.Load(m)
	if err != nil {
		if old != nil && old.fired.Load() {
			c.retry(ctx, m, old)
		}
		return nil, err
	}
	if old != nil {
		old.timer.Stop()
		scheduleKey.Delete(m)
	}
	c.arm(ctx, m, conn)
	return conn, nil
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	if old, ok := scheduleKey.LoadAndDelete(metadata.Client(ctx)); ok {
		old.timer.Stop()
	}
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// arm sets the timer for a connection just returned by the next hop.
func (c *client) arm(ctx context.Context, m *metadata.Map, conn *networkservice.Connection) {
	seg := conn.GetCurrentPathSegment()
	if seg.GetExpires() == nil {
		return
	}
	expires := seg.GetExpires().AsTime()
	left := clock.FromContext(ctx).Until(expires)
	if left <= 0 {
		log.FromContext(ctx).Warn("refresh: the next hop returned a token that has already expired; not refreshing",
			"connection", conn.GetId(), "expires", expires)
		return
	}
	s := &schedule{expires: expires, every: time.Duration(float64(left) * fraction(conn.GetPath()))}
	c.start(ctx, m, s, s.every)
}

// retry sets the next try after a refresh failed, if it comes before the expiry.
func (c *client) retry(ctx context.Context, m *metadata.Map, old *schedule) {
	if clock.FromContext(ctx).Until(old.expires) <= old.every {
		scheduleKey.Delete(m)
		log.FromContext(ctx).Warn("refresh: last try failed and the token expires before another; leaving the connection to heal",
			"expires", old.expires)
		return
	}
	c.start(ctx, m, &schedule{expires: old.expires, every: old.every}, old.every)
}

// start stores s and sets its timer to re-request through begin after d.
func (c *client) start(ctx context.Context, m *metadata.Map, s *schedule, d time.Duration) {
	events := begin.FromContext(ctx)
	if events == nil {
		panic("refresh: no begin before this element in the chain")
	}
	clk, logger := clock.FromContext(ctx), log.FromContext(ctx)
	s.timer = clk.AfterFunc(d, func() {
		s.fired.Store(true)
		if c.ctx.Err() != nil {
			return
		}
		// A fixed bound, not the time left on the token: a timer that fires late (a busy machine,
		// a test's clock moved far at once) still refreshes, and the next hop judges the token.
		run, cancel := context.WithTimeout(c.ctx, attemptTimeout)
		defer cancel()
		if err := events.Request(run); err != nil && !errors.Is(err, begin.ErrForgotten) {
			logger.Warn("refresh: re-request failed", "error", err)
		}
	})
	scheduleKey.Store(m, s)
}

// attemptTimeout bounds one refresh.
const attemptTimeout = 15 * time.Second

// fraction is the part of the remaining lifetime to wait: 1/4 for the first hop, up to just
// under 0.35 for the last.
func fraction(path *networkservice.Path) float64 {
	n := len(path.GetPathSegments())
	if n == 0 {
		return 0.25
	}
	return 0.25 + 0.1*float64(path.GetIndex())/float64(n)
}
