package retry_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/retry"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// flaky fails its first calls with the errors it is given, then passes. An error hang makes
// the call wait for its context instead.
type flaky struct {
	mu                     sync.Mutex
	requestErrs, closeErrs []error
	requests, closes       int
}

var errHang = errors.New("hang")

func (f *flaky) take(errs *[]error, n *int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	*n++
	if len(*errs) == 0 {
		return nil
	}
	err := (*errs)[0]
	*errs = (*errs)[1:]
	return err
}

func (f *flaky) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().Labels = map[string]string{"touched": "yes"} // each attempt gets a fresh copy
	err := f.take(&f.requestErrs, &f.requests)
	if errors.Is(err, errHang) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return next.Server(ctx).Request(ctx, req)
}

func (f *flaky) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := f.take(&f.closeErrs, &f.closes); err != nil {
		return nil, err
	}
	return next.Server(ctx).Close(ctx, conn)
}

func (f *flaky) counts() (requests, closes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.closes
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "ns"}}
}

// run starts fn in the bubble and returns a channel closed when it is done.
func run(fn func()) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	return done
}

func finished(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func TestFailsTwiceThenSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		ctx := clock.WithClock(context.Background(), fake)
		f := &flaky{requestErrs: []error{
			status.Error(codes.Unavailable, "nsmgr not listening yet"),
			status.Error(codes.NotFound, "no endpoint for ns yet"),
		}}
		c := next.NewNetworkServiceClient(retry.NewClient(), adapters.NewServerToClient(f))

		req := request()
		var conn *networkservice.Connection
		var err error
		done := run(func() { conn, err = c.Request(ctx, req) })

		synctest.Wait()
		n, _ := f.counts()
		require.Equal(t, 1, n)
		require.Equal(t, 1, fake.Pending(), "waiting on the context's clock")
		fake.Advance(49 * time.Millisecond) // the first wait is 50..100ms
		synctest.Wait()
		n, _ = f.counts()
		require.Equal(t, 1, n, "retried before half the first backoff")
		fake.Advance(51 * time.Millisecond)
		synctest.Wait()
		n, _ = f.counts()
		require.Equal(t, 2, n)
		fake.Advance(200 * time.Millisecond) // the second wait is 100..200ms
		synctest.Wait()

		require.True(t, finished(done))
		require.NoError(t, err)
		require.Equal(t, "c", conn.GetId())
		n, _ = f.counts()
		require.Equal(t, 3, n)
		require.Nil(t, req.GetConnection().GetLabels(), "the caller's request is not changed by the attempts")
		require.Zero(t, fake.Pending())
	})
}

func TestBackoffDoublesUpToTheCeiling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		ctx := clock.WithClock(context.Background(), fake)
		unavailable := status.Error(codes.Unavailable, "down")
		f := &flaky{requestErrs: []error{unavailable, unavailable, unavailable, unavailable, unavailable}}
		c := next.NewNetworkServiceClient(retry.NewClient(retry.WithBackoff(10*time.Millisecond, 40*time.Millisecond)), adapters.NewServerToClient(f))

		done := run(func() { _, _ = c.Request(ctx, request()) })
		for i, wait := range []time.Duration{10, 20, 40, 40, 40} {
			wait *= time.Millisecond
			synctest.Wait()
			fake.Advance(wait/2 - time.Millisecond)
			synctest.Wait()
			n, _ := f.counts()
			require.Equal(t, i+1, n, "wait %d came before half of %v", i+1, wait)
			fake.Advance(wait/2 + time.Millisecond)
			synctest.Wait()
			n, _ = f.counts()
			require.Equal(t, i+2, n, "wait %d lasted longer than %v", i+1, wait)
		}
		<-done
	})
}

func TestWhichErrorsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		err   error
		retry bool
	}{
		{status.Error(codes.Unavailable, "x"), true},
		{status.Error(codes.ResourceExhausted, "x"), true},
		{status.Error(codes.ResourceExhausted, "grpc: trying to send message larger than max (2000000 vs. 1048576)"), false},
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max (2000000 vs. 1048576)"), false},
		{status.Error(codes.Aborted, "x"), true},
		{status.Error(codes.NotFound, "x"), true},
		{status.Error(codes.DeadlineExceeded, "x"), true},
		{context.DeadlineExceeded, true},
		{status.Error(codes.InvalidArgument, "x"), false},
		{status.Error(codes.PermissionDenied, "x"), false},
		{status.Error(codes.Unauthenticated, "x"), false},
		{status.Error(codes.FailedPrecondition, "x"), false},
		{status.Error(codes.AlreadyExists, "x"), false},
		{status.Error(codes.OutOfRange, "x"), false},
		{status.Error(codes.Unimplemented, "x"), false},
		{status.Error(codes.Internal, "x"), false},
		{status.Error(codes.DataLoss, "x"), false},
		{status.Error(codes.Canceled, "x"), false},
		{errors.New("no code"), false},
	} {
		name := tc.err.Error()
		if s, ok := status.FromError(tc.err); ok {
			name = s.Code().String()
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := clock.NewFake(time.Now())
				ctx := clock.WithClock(context.Background(), fake)
				f := &flaky{requestErrs: []error{tc.err}, closeErrs: []error{tc.err}}
				c := next.NewNetworkServiceClient(retry.NewClient(), adapters.NewServerToClient(f))

				var reqErr, closeErr error
				done := run(func() {
					_, reqErr = c.Request(ctx, request())
					_, closeErr = c.Close(ctx, request().GetConnection())
				})
				synctest.Wait()
				fake.Advance(time.Second)
				synctest.Wait()
				fake.Advance(time.Second)
				<-done

				requests, closes := f.counts()
				if tc.retry {
					require.NoError(t, reqErr)
					require.NoError(t, closeErr)
					require.Equal(t, 2, requests)
					require.Equal(t, 2, closes)
				} else {
					require.Equal(t, tc.err, reqErr, "a permanent error comes back unchanged")
					require.Equal(t, tc.err, closeErr)
					require.Equal(t, 1, requests)
					require.Equal(t, 1, closes)
				}
			})
		})
	}
}

func TestCloseIsRetriedOnlyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		ctx := clock.WithClock(context.Background(), fake)
		unavailable := status.Error(codes.Unavailable, "down")
		f := &flaky{closeErrs: []error{unavailable, unavailable, unavailable}}
		c := next.NewNetworkServiceClient(retry.NewClient(), adapters.NewServerToClient(f))

		var err error
		done := run(func() { _, err = c.Close(ctx, request().GetConnection()) })
		synctest.Wait()
		fake.Advance(time.Second)
		<-done
		require.Equal(t, codes.Unavailable, status.Code(err))
		_, closes := f.counts()
		require.Equal(t, 2, closes)
	})
}

func TestContextEndStopsRetrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		ctx, cancel := context.WithCancel(clock.WithClock(context.Background(), fake))
		unavailable := status.Error(codes.Unavailable, "nsmgr is down")
		f := &flaky{requestErrs: []error{unavailable, unavailable, unavailable}}
		c := next.NewNetworkServiceClient(retry.NewClient(), adapters.NewServerToClient(f))

		var err error
		done := run(func() { _, err = c.Request(ctx, request()) })
		synctest.Wait()
		fake.Advance(100 * time.Millisecond)
		synctest.Wait()
		cancel()
		<-done

		require.Equal(t, codes.Unavailable, status.Code(err), "the code of the last attempt")
		require.ErrorIs(t, err, context.Canceled)
		require.Contains(t, err.Error(), "2 attempts failed")
		require.Contains(t, err.Error(), "nsmgr is down")
		require.Zero(t, fake.Pending(), "the wait's timer is stopped")
		n, _ := f.counts()
		require.Equal(t, 2, n)
	})
}

func TestCallerDeadlineIsNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{requestErrs: []error{errHang}}
		c := next.NewNetworkServiceClient(retry.NewClient(), adapters.NewServerToClient(f))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Request(ctx, request())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		n, _ := f.counts()
		require.Equal(t, 1, n)
	})
}

func TestHungAttemptIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The real clock: in the bubble, time moves when everything waits.
		f := &flaky{requestErrs: []error{errHang}}
		c := next.NewNetworkServiceClient(retry.NewClient(retry.WithAttemptTimeout(time.Second)), adapters.NewServerToClient(f))
		start := time.Now()
		_, err := c.Request(context.Background(), request())
		require.NoError(t, err)
		n, _ := f.counts()
		require.Equal(t, 2, n)
		require.Less(t, time.Since(start), 1200*time.Millisecond)
	})
}
