// Package retry tries a failed Request again, waiting longer after each failure, until it
// succeeds, the caller's context ends, or the error is one another try cannot fix.
//
// A client starts in any order with the hops it needs: the manager may still be starting, the
// endpoint not yet registered. Retry turns those first moments into a short wait instead of an
// error. The wait after the first failure is about 100ms (WithBackoff) and doubles after each
// further failure up to about 5s; each wait is drawn between half and all of that value, so many
// clients that failed together do not come back together. Waits use the clock from the context
// (sdk/pkg/tools/clock) and end early when the context does; nothing is left running.
//
// Retried, because the same request can succeed a moment later:
//   - Unavailable: the next hop is down, restarting or not yet listening;
//   - ResourceExhausted: the next hop is overloaded (but not gRPC's refusal of a message over
//     its size bound, vwire.dev/api/validate.MaxMessageBytes: the same request never fits);
//   - Aborted: the request lost a race with another change;
//   - NotFound: no endpoint offers the service yet (endpoints register after they start);
//   - DeadlineExceeded, when only the attempt ran out of time (WithAttemptTimeout), not the caller.
//
// Everything else is returned at once: InvalidArgument, PermissionDenied, Unauthenticated,
// FailedPrecondition, AlreadyExists, OutOfRange and Unimplemented mean the request itself must
// change; Internal and DataLoss are bugs to report, not to hammer; Canceled means someone gave
// up; Unknown is an error without a code, so nothing says a retry would help. When the
// context ends first, the last attempt's error is returned with its code, saying how many
// attempts failed.
//
// Close is tried at most twice: once, and once more after the first wait if the first failure
// was one of the codes above. Retry belongs at the head of a client chain, before begin, so each
// attempt is a fresh event; background events (refresh, heal) enter at begin, after it, and
// handle their failures themselves.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// Option configures the retry client.
type Option func(*options)

type options struct {
	first, ceiling time.Duration
	attemptTimeout time.Duration
}

// WithBackoff sets the wait after the first failure and the most any wait grows to. A first
// below 1ms is raised to 1ms, and maximum to at least first.
func WithBackoff(first, maximum time.Duration) Option {
	return func(o *options) {
		o.first = max(first, time.Millisecond)
		o.ceiling = max(maximum, o.first)
	}
}

// WithAttemptTimeout bounds each attempt, so a hop that hangs is tried again rather than waited
// for until the caller's deadline. Zero leaves attempts bounded by the caller's context only.
// The default is 15s.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) { o.attemptTimeout = max(d, 0) }
}

// NewClient returns the retry client.
func NewClient(opts ...Option) networkservice.NetworkServiceClient {
	o := options{first: 100 * time.Millisecond, ceiling: 5 * time.Second, attemptTimeout: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return &client{options: o}
}

type client struct{ options }

func (c *client) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	backoff := c.first
	for attempt := 1; ; attempt++ {
		conn, err := c.try(ctx, req, opts)
		if err == nil || !retryable(ctx, err) {
			return conn, err
		}
		wait := jitter(backoff)
		log.FromContext(ctx).Debug("retry: request failed, trying again",
			"connection", req.GetConnection().GetId(), "attempt", attempt, "wait", wait, "error", err)
		if waitErr := sleep(ctx, wait); waitErr != nil {
			return nil, fmt.Errorf("retry: %d attempts failed before the context ended (%w); the last: %w", attempt, waitErr, err)
		}
		backoff = min(2*backoff, c.ceiling)
	}
}

// try makes one attempt, with its own deadline if one is set.
func (c *client) try(ctx context.Context, req *networkservice.NetworkServiceRequest, opts []grpc.CallOption) (*networkservice.Connection, error) {
	if c.attemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.attemptTimeout)
		defer cancel()
	}
	return next.Client(ctx).Request(ctx, req.Clone(), opts...)
}

func (c *client) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	rv, err := next.Client(ctx).Close(ctx, conn.Clone(), opts...)
	if err == nil || !retryable(ctx, err) {
		return rv, err
	}
	if waitErr := sleep(ctx, jitter(c.first)); waitErr != nil {
		return nil, err
	}
	return next.Client(ctx).Close(ctx, conn.Clone(), opts...)
}

// retryable says whether another attempt may succeed where err failed, while ctx lasts.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return !strings.Contains(status.Convert(err).Message(), tooLarge)
	case codes.Unavailable, codes.Aborted, codes.NotFound, codes.DeadlineExceeded:
		return true
	}
	// In-process elements may return the attempt's own deadline as a plain error.
	return errors.Is(err, context.DeadlineExceeded)
}

// tooLarge is in gRPC's messages refusing a message over the size bound, at the sender ("trying
// to send message larger than max") and at the receiver ("received message larger than max").
const tooLarge = "message larger than max"

// sleep waits d on ctx's clock, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	done := make(chan struct{})
	timer := clock.FromContext(ctx).AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		timer.Stop()
		return ctx.Err()
	}
}

// jitter returns a wait between d/2 and d.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(d-half+1)
}
