// Package timeout closes a connection whose caller stopped refreshing it: when the token that
// authorized its last Request expires, the connection is closed as if the caller had closed it.
//
// A caller keeps a connection by refreshing it (a new Request, with a new token) before its
// token expires; a caller that died or lost its way stops doing so. After each successful
// Request the element schedules, on the context's clock, a Close for the moment the previous
// hop's token expires (the expires of path segment index-1; of the segment at the index for the
// first hop). A new Request replaces the schedule; a failed Request keeps the old one, since the
// connection stays as it was; Close cancels it. The Close runs through begin's EventFactory,
// serialized with the connection's other events and from begin's place in the chain, so every
// element closes what it set up.
//
// It belongs after begin (whose EventFactory it uses) and metadata (where it keeps its timer),
// and after updatepath and updatetoken, which set the index and the tokens it reads. A Request
// whose caller's segment has no expires is refused with InvalidArgument before next: without
// it the connection could never time out.
package timeout

import (
	"context"
	"errors"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// expiry is a connection's scheduled Close.
type expiry struct {
	timer clock.Timer
	// cancel ends the callback's wait for the connection's turn, for when the schedule is
	// replaced while the callback, already fired, waits behind the Request replacing it.
	cancel context.CancelFunc
}

var expiryKey = metadata.NewKey[*expiry]("timeout")

// Option changes the timeout element.
type Option func(*options)

type options struct {
	closeTimeout time.Duration
}

// WithCloseTimeout bounds each Close the element starts, including the wait for the
// connection's turn (default 15s).
func WithCloseTimeout(d time.Duration) Option { return func(o *options) { o.closeTimeout = d } }

// NewServer returns the timeout element. Once ctx is done (the component stops), scheduled
// Closes no longer run.
func NewServer(ctx context.Context, opts ...Option) networkservice.NetworkServiceServer {
	o := options{closeTimeout: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return &server{ctx: ctx, closeTimeout: o.closeTimeout}
}

type server struct {
	ctx          context.Context
	closeTimeout time.Duration
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	expires, err := callerExpires(req.GetConnection().GetPath())
	if err != nil {
		return nil, err
	}
	events := begin.FromContext(ctx)
	if events == nil {
		return nil, status.Error(codes.Internal, "timeout: no begin before timeout in the chain: put begin.NewServer() before it")
	}
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	m := metadata.Server(ctx)
	if old, ok := expiryKey.Load(m); ok {
		old.timer.Stop()
		old.cancel()
	}
	expiryKey.Store(m, s.schedule(ctx, events, expires))
	return conn, nil
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if e, ok := expiryKey.LoadAndDelete(metadata.Server(ctx)); ok && e.timer.Stop() {
		// The callback will never run. If it already runs, it may be this very Close, whose
		// context its cancel would end; it cleans up after itself.
		e.cancel()
	}
	return next.Server(ctx).Close(ctx, conn)
}

// schedule arranges a Close of the connection of ctx at expires.
func (s *server) schedule(ctx context.Context, events begin.EventFactory, expires time.Time) *expiry {
	wait, cancel := context.WithCancel(s.ctx)
	c := clock.FromContext(ctx)
	timer := c.AfterFunc(c.Until(expires), func() {
		defer cancel()
		if wait.Err() != nil { // replaced or stopped since the timer fired
			return
		}
		closing, done := context.WithTimeout(wait, s.closeTimeout)
		defer done()
		switch err := events.Close(closing); {
		case err == nil:
			log.FromContext(ctx).Info("timeout: closed: the caller's token expired without a refresh", "expired", expires)
		case wait.Err() == nil && !errors.Is(err, begin.ErrForgotten):
			log.FromContext(ctx).Warn("timeout: closing an expired connection failed", "expired", expires, "error", err)
		}
	})
	return &expiry{timer: timer, cancel: cancel}
}

// callerExpires returns when the token of the hop before this one expires: that of path
// segment index-1, or, for the first hop, of the segment at the index.
func callerExpires(path *networkservice.Path) (time.Time, error) {
	index := int(path.GetIndex())
	segments := path.GetPathSegments()
	if index >= len(segments) {
		return time.Time{}, status.Errorf(codes.InvalidArgument,
			"timeout: path index %d is outside the path of %d segments: put updatepath before timeout", index, len(segments))
	}
	if index > 0 {
		index--
	}
	seg := segments[index]
	if seg.GetExpires() == nil {
		return time.Time{}, status.Errorf(codes.InvalidArgument,
			"timeout: path segment %d (%s) has no expires: the caller must send its token's expiry (put updatetoken before timeout)",
			index, seg.GetName())
	}
	return seg.GetExpires().AsTime(), nil
}
