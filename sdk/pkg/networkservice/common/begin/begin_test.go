package begin_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func request(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{Id: id, NetworkService: "ns"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: "LOCAL", Type: "KERNEL"}},
	}
}

// overlap counts how many events run inside it at once, per connection and in all.
type overlap struct {
	mu      sync.Mutex
	perConn map[string]int
	worst   int
	total   atomic.Int32
	maxAll  atomic.Int32
	hold    chan struct{}
}

func (o *overlap) enter(id string) {
	o.mu.Lock()
	o.perConn[id]++
	o.worst = max(o.worst, o.perConn[id])
	o.mu.Unlock()
	n := o.total.Add(1)
	for {
		m := o.maxAll.Load()
		if n <= m || o.maxAll.CompareAndSwap(m, n) {
			break
		}
	}
	<-o.hold
	o.total.Add(-1)
	o.mu.Lock()
	o.perConn[id]--
	o.mu.Unlock()
}

func (o *overlap) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	o.enter(req.GetConnection().GetId())
	return next.Server(ctx).Request(ctx, req)
}

func (o *overlap) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	o.enter(conn.GetId())
	return next.Server(ctx).Close(ctx, conn)
}

func TestOneEventPerConnectionAtATime(t *testing.T) {
	o := &overlap{perConn: map[string]int{}, hold: make(chan struct{})}
	server := next.NewNetworkServiceServer(begin.NewServer(), o)

	var wg sync.WaitGroup
	for i := range 8 {
		id := []string{"a", "b"}[i%2]
		wg.Go(func() {
			if i%4 == 3 {
				_, _ = server.Close(context.Background(), request(id).GetConnection())
				return
			}
			_, err := server.Request(context.Background(), request(id))
			require.NoError(t, err)
		})
	}
	// Two connections may run side by side; let events through one at a time until all are done.
	require.Eventually(t, func() bool { return o.total.Load() == 2 }, 5*time.Second, time.Millisecond)
	for range 8 {
		o.hold <- struct{}{}
	}
	wg.Wait()
	require.Equal(t, 1, o.worst, "two events of one connection overlapped")
	require.Equal(t, int32(2), o.maxAll.Load(), "different connections should run in parallel")
}

// remember keeps the EventFactory of the last event it saw.
type remember struct {
	mu      sync.Mutex
	factory begin.EventFactory
	values  []any // ctx.Value(ctxKey{}) of each Request
}

func (r *remember) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	r.mu.Lock()
	r.factory = begin.FromContext(ctx)
	r.values = append(r.values, ctx.Value(ctxKey{}))
	r.mu.Unlock()
	return next.Server(ctx).Request(ctx, req)
}

func (r *remember) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (r *remember) get() begin.EventFactory {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.factory
}

// stamp plays the next hop: it writes which request this is into the returned connection.
type stamp struct{ n atomic.Int32 }

func (s *stamp) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	conn.Labels = map[string]string{"seen": string(rune('0' + s.n.Add(1)))}
	return next.Server(ctx).Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn, MechanismPreferences: req.GetMechanismPreferences()})
}

func (s *stamp) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

type ctxKey struct{}

func TestFactoryRepeatsLastRequestWithItsValues(t *testing.T) {
	r, rec := &remember{}, checks.NewServer()
	server := next.NewNetworkServiceServer(begin.NewServer(), r, rec, &stamp{})

	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "from-first-request"))
	conn, err := server.Request(ctx, request("c"))
	require.NoError(t, err)
	require.Equal(t, "1", conn.GetLabels()["seen"])
	cancel() // the original caller is gone; background events must not depend on its cancel

	require.NoError(t, r.get().Request(context.Background()))
	reqs := rec.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, "1", reqs[1].GetConnection().GetLabels()["seen"], "a repeat sends the connection as last returned")
	require.Equal(t, "KERNEL", reqs[1].GetMechanismPreferences()[0].GetType(), "a repeat keeps the mechanism preferences")
	require.Equal(t, []any{"from-first-request", "from-first-request"}, r.values, "a repeat runs with the first request's context values")

	require.NoError(t, r.get().Close(context.Background()))
	require.Len(t, rec.Closes(), 1)
	require.Empty(t, rec.Open())
	require.ErrorIs(t, r.get().Request(context.Background()), begin.ErrForgotten)
	require.ErrorIs(t, r.get().Close(context.Background()), begin.ErrForgotten)
}

func TestFailedFirstRequestIsForgotten(t *testing.T) {
	r := &remember{}
	fail := inject.NewServer(errors.New("boom"))
	server := next.NewNetworkServiceServer(begin.NewServer(), r, fail)

	_, err := server.Request(context.Background(), request("c"))
	require.EqualError(t, err, "boom")
	require.ErrorIs(t, r.get().Request(context.Background()), begin.ErrForgotten)
}

func TestFailedRefreshKeepsConnection(t *testing.T) {
	r := &remember{}
	fail := inject.NewServer(nil)
	server := next.NewNetworkServiceServer(begin.NewServer(), r, fail)

	_, err := server.Request(context.Background(), request("c"))
	require.NoError(t, err)
	first := r.get()
	fail.FailRequests(errors.New("boom"))
	_, err = server.Request(context.Background(), request("c"))
	require.Error(t, err)
	fail.FailRequests(nil)
	require.NoError(t, first.Request(context.Background()), "an established connection survives a failed refresh")
}

func TestWaitEndsWithContext(t *testing.T) {
	o := &overlap{perConn: map[string]int{}, hold: make(chan struct{})}
	server := next.NewNetworkServiceServer(begin.NewServer(), o)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = server.Request(context.Background(), request("c"))
	}()
	require.Eventually(t, func() bool { return o.total.Load() == 1 }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := server.Request(ctx, request("c"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	o.hold <- struct{}{}
	<-done
}

// clientRecorder notes the connection IDs that reach the end of a client chain.
type clientRecorder struct{ ids chan string }

func (c clientRecorder) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	c.ids <- req.GetConnection().GetId()
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (c clientRecorder) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	c.ids <- "close:" + conn.GetId()
	return next.Client(ctx).Close(ctx, conn, opts...)
}

type clientRemember struct{ remember }

func (c *clientRemember) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	c.mu.Lock()
	c.factory = begin.FromContext(ctx)
	c.mu.Unlock()
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (c *clientRemember) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func TestClientFactoryReentersClientChain(t *testing.T) {
	r := &clientRemember{}
	rec := clientRecorder{ids: make(chan string, 4)}
	client := next.NewNetworkServiceClient(begin.NewClient(), r, rec)

	_, err := client.Request(context.Background(), request("c"))
	require.NoError(t, err)
	require.Equal(t, "c", <-rec.ids)
	require.NoError(t, r.get().Request(context.Background()))
	require.Equal(t, "c", <-rec.ids)
	require.NoError(t, r.get().Close(context.Background()))
	require.Equal(t, "close:c", <-rec.ids)
}

func TestClientChainJoinsServerEvents(t *testing.T) {
	serverSide, clientSide, rec := &remember{}, &clientRemember{}, checks.NewServer()
	server := next.NewNetworkServiceServer(
		begin.NewServer(),
		serverSide,
		adapters.NewClientToServer(next.NewNetworkServiceClient(begin.NewClient(), clientSide)),
		rec,
	)
	_, err := server.Request(context.Background(), request("c"))
	require.NoError(t, err)
	require.Same(t, serverSide.get(), clientSide.get(), "the client chain uses the server's events")

	require.NoError(t, clientSide.get().Request(context.Background()))
	require.Len(t, serverSide.values, 2, "background work of the client re-enters the whole server chain")
	require.Len(t, rec.Requests(), 2)
}

func TestReselectAsksForANewEndpoint(t *testing.T) {
	r, rec := &remember{}, checks.NewServer()
	server := next.NewNetworkServiceServer(begin.NewServer(), r, rec)
	req := request("c")
	req.Connection.NetworkServiceEndpointName = "nse-1"
	req.Connection.Mechanism = &networkservice.Mechanism{Cls: "LOCAL", Type: "KERNEL"}
	_, err := server.Request(context.Background(), req)
	require.NoError(t, err)

	require.NoError(t, r.get().Request(context.Background(), begin.Reselect()))
	got := rec.Requests()[1].GetConnection()
	require.Equal(t, networkservice.State_RESELECT_REQUESTED, got.GetState())
	require.Empty(t, got.GetNetworkServiceEndpointName())
	require.Nil(t, got.GetMechanism())
	require.Equal(t, "KERNEL", rec.Requests()[1].GetMechanismPreferences()[0].GetType(), "preferences stay")
}

// reroute plays a next hop that moved the connection to another endpoint: it answers with the
// path and endpoint of its own choice; with no endpoint set it passes the request on as it is.
type reroute struct{ endpoint string }

func (r *reroute) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if r.endpoint == "" {
		return next.Server(ctx).Request(ctx, req)
	}
	conn := req.GetConnection().Clone()
	conn.NetworkServiceEndpointName = r.endpoint
	conn.Path.PathSegments = append(conn.Path.PathSegments[:conn.Path.Index+1], &networkservice.PathSegment{Name: r.endpoint, Id: r.endpoint + "-id"})
	return next.Server(ctx).Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn})
}

func (r *reroute) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestRefreshAndCloseGoOnWithTheDownstreamPathThisHopKnows(t *testing.T) {
	rec := checks.NewServer()
	moved := &reroute{endpoint: "nse-1"}
	server := next.NewNetworkServiceServer(begin.NewServer(), moved, rec)
	// The previous hop's view: this hop at index 1, the endpoint it reached last time after it.
	stale := func() *networkservice.NetworkServiceRequest {
		req := request("c")
		req.Connection.NetworkServiceEndpointName = "nse-1"
		req.Connection.Path = &networkservice.Path{Index: 1, PathSegments: []*networkservice.PathSegment{
			{Name: "nsc", Id: "nsc-id"}, {Name: "nsmgr", Id: "c"}, {Name: "nse-1", Id: "nse-1-id"}}}
		return req
	}
	_, err := server.Request(context.Background(), stale())
	require.NoError(t, err)

	// Downstream healed to nse-2 (a heal re-entering at this hop); the previous hop does not know.
	moved.endpoint = "nse-2"
	_, err = server.Request(context.Background(), stale())
	require.NoError(t, err)
	moved.endpoint = "" // from now on the next hop answers with what it is sent
	_, err = server.Request(context.Background(), stale())
	require.NoError(t, err)
	refresh := rec.Requests()[2].GetConnection()
	require.Equal(t, "nse-2", refresh.GetNetworkServiceEndpointName(), "a refresh goes to the endpoint this hop reached last")
	require.Equal(t, "nse-2-id", refresh.GetPath().GetPathSegments()[2].GetId())
	require.Equal(t, "nsc-id", refresh.GetPath().GetPathSegments()[0].GetId(), "the path up to this hop is the previous hop's")

	_, err = server.Close(context.Background(), stale().GetConnection())
	require.NoError(t, err)
	closed := rec.Closes()[0]
	require.Equal(t, "nse-2", closed.GetNetworkServiceEndpointName(), "Close goes to the endpoint this hop reached last")
	require.Equal(t, "nse-2-id", closed.GetPath().GetPathSegments()[2].GetId())
}

func TestReselectFromThePreviousHopIsNotRedirected(t *testing.T) {
	rec := checks.NewServer()
	server := next.NewNetworkServiceServer(begin.NewServer(), rec)
	req := request("c")
	req.Connection.NetworkServiceEndpointName = "nse-1"
	_, err := server.Request(context.Background(), req)
	require.NoError(t, err)
	again := request("c")
	again.Connection.State = networkservice.State_RESELECT_REQUESTED
	_, err = server.Request(context.Background(), again)
	require.NoError(t, err)
	require.Empty(t, rec.Requests()[1].GetConnection().GetNetworkServiceEndpointName())
}

func TestRefusedCloseKeepsConnection(t *testing.T) {
	r := &remember{}
	refuse := inject.NewServer(nil)
	server := next.NewNetworkServiceServer(begin.NewServer(), r, refuse)

	_, err := server.Request(context.Background(), request("c"))
	require.NoError(t, err)
	first := r.get()
	refuse.FailCloses(status.Error(codes.PermissionDenied, "not yours"))
	_, err = server.Close(context.Background(), request("c").GetConnection())
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	refuse.FailCloses(nil)
	require.NoError(t, first.Request(context.Background()), "a refused Close leaves the connection's background work")
	require.NoError(t, first.Close(context.Background()))
	require.ErrorIs(t, first.Request(context.Background()), begin.ErrForgotten)
}
