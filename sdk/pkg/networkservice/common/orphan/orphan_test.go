package orphan_test

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/orphan"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const grace = 3 * time.Second

// hop is a server chain begin, metadata, orphan, recorder on a fake clock, served over gRPC on a
// unix socket with orphan's stats handler, as an nsmgr serves.
type hop struct {
	fake   *clock.Fake
	rec    *checks.Recorder
	gate   *gate
	events chan begin.EventFactory // of each Request that passed
	chain  networkservice.NetworkServiceServer
	url    *url.URL
}

func newHop(t *testing.T) *hop {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	h := &hop{fake: clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)), rec: checks.NewServer(), gate: &gate{},
		url: &url.URL{Scheme: "unix", Path: filepath.Join(dir, "hop.sock")}}
	ctx, cancel := context.WithCancel(log.WithLogger(clock.WithClock(context.Background(), h.fake), slog.New(slog.DiscardHandler)))
	h.events = make(chan begin.EventFactory, 10)
	h.chain = next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(),
		orphan.NewServer(ctx, orphan.WithGrace(grace)), grab{h.events}, h.gate, h.rec)
	errs, err := grpcserve.Serve(ctx, h.url, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		networkservice.RegisterNetworkServiceServer(s, h.chain)
	}), grpc.StatsHandler(orphan.StatsHandler()))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return h
}

// grab hands the EventFactory of each Request to a test, to start background events.
type grab struct{ events chan<- begin.EventFactory }

func (g grab) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	select {
	case g.events <- begin.FromContext(ctx):
	default:
	}
	return next.Server(ctx).Request(ctx, req)
}

func (g grab) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// gate holds each call, once closed (hold), until released, and passes it on only if its
// context still lives then.
type gate struct {
	mu      sync.Mutex
	held    chan struct{} // gets a value when a call waits
	release chan struct{}
}

func (g *gate) hold() (held <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held, g.release = make(chan struct{}, 1), make(chan struct{})
	return g.held, func() { close(g.release) }
}

func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	held, release := g.held, g.release
	g.mu.Unlock()
	if release != nil {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
	}
	return ctx.Err()
}

func (g *gate) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if err := g.pass(ctx); err != nil {
		return nil, err
	}
	return next.Server(ctx).Request(ctx, req)
}

func (g *gate) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := g.pass(ctx); err != nil {
		return nil, err
	}
	return next.Server(ctx).Close(ctx, conn)
}

// caller is a new transport to the hop: a caller process of its own.
func (h *hop) caller(t *testing.T) (networkservice.NetworkServiceClient, func()) {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+h.url.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return networkservice.NewNetworkServiceClient(cc), func() { _ = cc.Close() }
}

// graceStarted waits until the hop noticed the end of a transport and armed its grace.
func (h *hop) graceStarted(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return h.fake.Pending() == 1 }, 5*time.Second, time.Millisecond,
		"the hop did not notice that its caller's transport ended")
}

func request(t *testing.T, c networkservice.NetworkServiceClient, conn *networkservice.Connection) *networkservice.Connection {
	t.Helper()
	got, err := c.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
	require.NoError(t, err)
	return got
}

// TestCallerGoneCloses: the caller's transport ends and nobody comes back: the connection is
// closed downstream once the grace has passed, not before.
func TestCallerGoneCloses(t *testing.T) {
	h := newHop(t)
	c, die := h.caller(t)
	request(t, c, &networkservice.Connection{Id: "conn-1"})
	die()
	h.graceStarted(t)

	h.fake.Advance(grace - time.Millisecond)
	require.Equal(t, 1, h.fake.Pending(), "closed before the grace ended")
	require.Empty(t, h.rec.Closes())

	h.fake.Advance(time.Millisecond)
	require.Eventually(t, func() bool { return len(h.rec.Closes()) == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, "conn-1", h.rec.Closes()[0].GetId())
	require.Empty(t, h.rec.Open())
}

// TestCallerBackWithinGraceKeeps: the caller comes back over a new transport and refreshes
// within the grace: the connection stays, and is now watched on the new transport.
func TestCallerBackWithinGraceKeeps(t *testing.T) {
	h := newHop(t)
	c, die := h.caller(t)
	conn := request(t, c, &networkservice.Connection{Id: "conn-1"})
	die()
	h.graceStarted(t)

	c2, die2 := h.caller(t)
	request(t, c2, conn)
	require.Zero(t, h.fake.Pending(), "the grace still runs after the caller came back")
	h.fake.Advance(2 * grace)
	require.Empty(t, h.rec.Closes())
	require.Equal(t, []string{"conn-1"}, h.rec.Open())

	die2()
	h.graceStarted(t)
	h.fake.Advance(grace)
	require.Eventually(t, func() bool { return len(h.rec.Closes()) == 1 }, 5*time.Second, time.Millisecond)
}

// TestBackgroundRequestKeepsGrace: a background Request (heal's, through begin) carries its
// caller's ended transport: it neither resets nor stops the grace.
func TestBackgroundRequestKeepsGrace(t *testing.T) {
	h := newHop(t)
	c, die := h.caller(t)
	request(t, c, &networkservice.Connection{Id: "conn-1"})
	events := <-h.events
	die()
	h.graceStarted(t)
	h.fake.Advance(grace / 2)
	require.NoError(t, events.Request(context.Background()))
	require.Empty(t, h.rec.Closes())
	h.fake.Advance(grace / 2)
	require.Eventually(t, func() bool { return len(h.rec.Closes()) == 1 }, 5*time.Second, time.Millisecond)
}

// TestCallerClosesItself: a Close from the caller stops the connection's watch: the end of its
// transport arms the grace of the caller's other connection only.
func TestCallerClosesItself(t *testing.T) {
	h := newHop(t)
	c, die := h.caller(t)
	conn := request(t, c, &networkservice.Connection{Id: "conn-1"})
	request(t, c, &networkservice.Connection{Id: "conn-2"})
	_, err := c.Close(context.Background(), conn)
	require.NoError(t, err)
	die()
	h.graceStarted(t)
	require.Never(t, func() bool { return h.fake.Pending() > 1 }, 200*time.Millisecond, time.Millisecond,
		"a closed connection's watch armed a grace")
	h.fake.Advance(grace)
	require.Eventually(t, func() bool { return len(h.rec.Closes()) == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, "conn-2", h.rec.Closes()[1].GetId())
}

// TestCallerGoneWhileCallingIsFinished: a caller that dies while its Close, or its first
// Request, runs does not cut it off half-way: the rest of the chain gets the whole call; the
// connection so made is then closed after the grace. (Each caller holds a second connection,
// whose grace tells the test that the hop saw the transport end.)
func TestCallerGoneWhileCallingIsFinished(t *testing.T) {
	h := newHop(t)
	c, die := h.caller(t)
	request(t, c, &networkservice.Connection{Id: "standing-1"})
	conn := request(t, c, &networkservice.Connection{Id: "conn-1"})

	held, release := h.gate.hold()
	closed := make(chan error, 1)
	go func() { _, err := c.Close(context.Background(), conn); closed <- err }()
	<-held
	die()
	require.Error(t, <-closed, "the caller went away before the answer")
	h.graceStarted(t)
	release()
	require.Eventually(t, func() bool { return !slices.Contains(h.rec.Open(), "conn-1") }, 5*time.Second, time.Millisecond,
		"the Close of a caller that went away was cut off")
	h.fake.Advance(grace)
	require.Eventually(t, func() bool { return len(h.rec.Open()) == 0 }, 5*time.Second, time.Millisecond)

	c2, die2 := h.caller(t)
	request(t, c2, &networkservice.Connection{Id: "standing-2"})
	held, release = h.gate.hold()
	requested := make(chan error, 1)
	go func() {
		_, err := c2.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-2"}})
		requested <- err
	}()
	<-held
	die2()
	require.Error(t, <-requested, "the caller went away before the answer")
	h.graceStarted(t)
	release()
	require.Eventually(t, func() bool { return slices.Contains(h.rec.Open(), "conn-2") }, 5*time.Second, time.Millisecond,
		"the Request of a caller that went away was cut off")
	require.Eventually(t, func() bool { return h.fake.Pending() == 2 }, 5*time.Second, time.Millisecond,
		"no grace for the connection made for a caller that went away")
	h.fake.Advance(grace)
	require.Eventually(t, func() bool { return len(h.rec.Open()) == 0 }, 5*time.Second, time.Millisecond,
		"the connection made for a caller that went away was not closed after the grace")
}

// TestWithinProcessArmsNothing: a Request that came over no transport (a call within the
// process) is never closed by the element.
func TestWithinProcessArmsNothing(t *testing.T) {
	h := newHop(t)
	ctx := clock.WithClock(context.Background(), h.fake)
	_, err := h.chain.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1"}})
	require.NoError(t, err)
	require.Zero(t, h.fake.Pending())
}

// TestOtherCallsAreNotTagged: the stats handler sees every call of the nsmgr; those that are not
// Request or Close (registrations, monitor streams, health checks) cost it no allocation.
func TestOtherCallsAreNotTagged(t *testing.T) {
	h := orphan.StatsHandler()
	ctx := context.Background()
	for _, method := range []string{"/registry.NetworkServiceEndpointRegistry/Register",
		"/networkservice.MonitorConnection/MonitorConnections", "/grpc.health.v1.Health/Check"} {
		info := &stats.RPCTagInfo{FullMethodName: method}
		require.Zero(t, testing.AllocsPerRun(100, func() { h.TagRPC(ctx, info) }), method)
	}
	info := &stats.RPCTagInfo{FullMethodName: "/networkservice.NetworkService/Request"}
	require.NotZero(t, testing.AllocsPerRun(100, func() { h.TagRPC(ctx, info) }), "a Request is tagged")
}
