package client_test

import (
	"context"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const lifetime = time.Minute // of the tokens of the refresh test

// begins returns the context of a test and checks when the test is over that it left no
// goroutine behind. The deadline only guards against a hang.
func begins(t *testing.T) context.Context {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first: runs after every other cleanup
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func socketURL(t *testing.T) *url.URL {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
}

// nse is a served endpoint (point2pointipam on IPv4 and IPv6, KERNEL) that records what
// reaches the end of its chain and tells arrived about every connection it accepted.
type nse struct {
	rec     *checks.Recorder
	arrived chan *networkservice.Connection
	stop    func() // stops serving and waits until it stopped
}

func serve(t *testing.T, ctx context.Context, u *url.URL) *nse {
	ctx, cancel := context.WithCancel(ctx)
	n := &nse{rec: checks.NewServer(), arrived: make(chan *networkservice.Connection, 100)}
	gen := token.NewInsecure(lifetime, token.WithClock(clock.FromContext(ctx)), token.WithName("nse"))
	ep := endpoint.NewServer(ctx, gen, endpoint.WithName("nse"), endpoint.WithAdditionalFunctionality(
		point2pointipam.NewServer(netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/120")),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: next.NewNetworkServiceServer()}),
		arrivals(n.arrived),
		n.rec, // after arrivals: a connection has arrived once the recorder holds it
	))
	errs, err := endpoint.Serve(ctx, u, ep)
	require.NoError(t, err)
	n.stop = func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	}
	t.Cleanup(n.stop)
	return n
}

// arrivals is an element that sends a copy of every connection the rest of the chain accepted
// to a channel.
type arrivals chan *networkservice.Connection

func (a arrivals) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err == nil {
		select {
		case a <- conn.Clone():
		default: // nobody is counting
		}
	}
	return conn, err
}

func (a arrivals) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// clientContext returns a context for a client chain's background work that ends before the
// endpoints started so far stop, so that the client does not start healing at the end.
func clientContext(t *testing.T, ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	return ctx
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
	}
}

// timers is the fake clock as the client sees it: it tells the test the delay of every timer
// the client sets (refresh sets one after each successful Request).
type timers struct {
	*clock.Fake
	set chan time.Duration
}

func (c timers) AfterFunc(d time.Duration, f func()) clock.Timer {
	timer := c.Fake.AfterFunc(d, f)
	c.set <- d
	return timer
}

// awaitTimer waits until the client sets a timer of d.
func (c timers) awaitTimer(t *testing.T, ctx context.Context, d time.Duration) {
	t.Helper()
	for {
		select {
		case got := <-c.set:
			if got == d {
				return
			}
		case <-ctx.Done():
			t.Fatalf("the client set no timer of %v", d)
		}
	}
}

func TestRefreshKeepsConnectionAcrossTokenExpiries(t *testing.T) {
	ctx := begins(t)
	fake := clock.NewFake(time.Unix(1_700_000_000, 0)) // whole seconds, as token expiries are
	u := socketURL(t)
	n := serve(t, clock.WithClock(ctx, fake), u)
	monitor, err := networkservice.NewMonitorConnectionClient(rawConn(t, u)).
		MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event := func(want networkservice.ConnectionEventType) *networkservice.ConnectionEvent {
		t.Helper()
		event, err := monitor.Recv()
		require.NoError(t, err)
		require.Equal(t, want, event.GetType())
		return event
	}
	event(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER)

	clk := timers{Fake: fake, set: make(chan time.Duration, 100)}
	cctx := clock.WithClock(clientContext(t, ctx), clk)
	nsc := client.NewClient(cctx, client.WithName("nsc"), client.WithClientURL(u),
		client.WithTokenGenerator(token.NewInsecure(lifetime, token.WithClock(clk), token.WithName("nsc"))))
	conn, err := nsc.Request(cctx, request())
	require.NoError(t, err)
	event(networkservice.ConnectionEventType_UPDATE)
	id := conn.GetPath().GetPathSegments()[1].GetId()

	// The first hop refreshes at a quarter of its token's lifetime; each step is one refresh.
	every := lifetime / 4
	clk.awaitTimer(t, ctx, every)
	const steps = 12 // three token lifetimes
	for range steps {
		fake.Advance(every)
		refreshed := event(networkservice.ConnectionEventType_UPDATE).GetConnections()[id]
		expires := refreshed.GetPath().GetPathSegments()[0].GetExpires().AsTime()
		require.WithinDuration(t, fake.Now().Add(lifetime), expires, 0, "the endpoint holds the refreshed token")
		clk.awaitTimer(t, ctx, every) // the refresh returned and set the next one
	}

	require.Empty(t, n.rec.Closes(), "the endpoint never timed the connection out")
	require.Equal(t, []string{id}, n.rec.Open())
	require.Len(t, n.rec.Requests(), 1+steps)

	_, err = nsc.Close(cctx, conn)
	require.NoError(t, err)
	require.Contains(t, event(networkservice.ConnectionEventType_DELETE).GetConnections(), id)
}

func TestHealsAfterEndpointRestart(t *testing.T) {
	ctx := begins(t)
	u := socketURL(t)
	first := serve(t, ctx, u)
	nsc := client.NewClient(clientContext(t, ctx), client.WithName("nsc"), client.WithClientURL(u))
	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	<-first.arrived
	id := conn.GetPath().GetPathSegments()[1].GetId()

	killed := time.Now()
	first.stop()
	second := serve(t, ctx, u)
	var back *networkservice.Connection
	select {
	case back = <-second.arrived:
	case <-ctx.Done():
		t.Fatal("the client did not come back to the restarted endpoint")
	}
	t.Logf("healed: the restarted endpoint had the connection again %v after the first one was stopped", time.Since(killed))

	require.Equal(t, id, back.GetId(), "the client came back with the connection it had")
	require.Equal(t, conn.GetContext().GetIpContext().GetSrcIpAddrs(), back.GetContext().GetIpContext().GetSrcIpAddrs(),
		"and kept its addresses")
	require.Equal(t, []string{id}, second.rec.Open())

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, second.rec.Open())
}

func rawConn(t *testing.T, u *url.URL) *grpc.ClientConn {
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestDefaultTokensFollowTheContextClock(t *testing.T) {
	ctx := begins(t)
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	ctx = clock.WithClock(ctx, fake)
	u := socketURL(t)
	serve(t, ctx, u)
	cctx := clientContext(t, ctx)
	nsc := client.NewClient(cctx, client.WithClientURL(u))
	conn, err := nsc.Request(cctx, request())
	require.NoError(t, err)
	require.WithinDuration(t, fake.Now().Add(client.DefaultTokenLifetime), conn.GetPath().GetPathSegments()[0].GetExpires().AsTime(), 0)
	_, err = nsc.Close(cctx, conn)
	require.NoError(t, err)
}
