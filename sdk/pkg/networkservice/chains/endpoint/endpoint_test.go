package endpoint_test

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
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/memif"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const lifetime = time.Minute // of every token in these tests

var (
	v4    = netip.MustParsePrefix("10.0.0.0/24")
	v6    = netip.MustParsePrefix("fd00::/120")
	start = time.Unix(1_700_000_000, 0) // whole seconds, as token expiries are
)

// begins returns the context of a test whose fake clock reads start, and checks when the test
// is over that it left no goroutine behind. The deadline only guards against a hang.
func begins(t testing.TB) (context.Context, *clock.Fake) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // registered first: runs after every other cleanup
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	fake := clock.NewFake(start)
	return clock.WithClock(ctx, fake), fake
}

// socketURL returns a unix URL in a short temporary directory (Linux caps socket paths).
func socketURL(t testing.TB) *url.URL {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
}

// nse is a served endpoint: point2pointipam on an IPv4 and an IPv6 prefix, KERNEL, and a
// recorder of what reached the end of the chain.
type nse struct {
	rec *checks.Recorder
}

func serve(t testing.TB, ctx context.Context, u *url.URL, extra ...networkservice.NetworkServiceServer) *nse {
	ctx, cancel := context.WithCancel(ctx)
	n := &nse{rec: checks.NewServer()}
	ep := endpoint.NewServer(ctx, token.NewInsecure(lifetime, token.WithClock(clock.FromContext(ctx)), token.WithName("nse")),
		endpoint.WithName("nse"),
		endpoint.WithAdditionalFunctionality(append([]networkservice.NetworkServiceServer{
			point2pointipam.NewServer(v4, v6),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernel.MECHANISM: next.NewNetworkServiceServer(), // nothing to plumb in a test
			}),
			n.rec,
		}, extra...)...))
	errs, err := endpoint.Serve(ctx, u, ep)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return n
}

func insecureGen(ctx context.Context, name string) token.GeneratorFunc {
	return token.NewInsecure(lifetime, token.WithClock(clock.FromContext(ctx)), token.WithName(name))
}

// newClient returns the standard client chain; its background work ends when the test does,
// before the endpoint stops (so that it does not start healing).
func newClient(t testing.TB, ctx context.Context, u *url.URL) networkservice.NetworkServiceClient {
	ctx = clientContext(t, ctx)
	return client.NewClient(ctx, client.WithName("nsc"), client.WithClientURL(u),
		client.WithTokenGenerator(insecureGen(ctx, "nsc")))
}

// bareClient is a client chain without refresh, heal or retry: it requests once and leaves
// the connection to time out.
func bareClient(t testing.TB, ctx context.Context, u *url.URL) networkservice.NetworkServiceClient {
	ctx = clientContext(t, ctx)
	gen := insecureGen(ctx, "nsc")
	return chain.NewNetworkServiceClient(
		updatepath.NewClient("nsc"),
		begin.NewClient(),
		metadata.NewClient(),
		clienturl.NewClient(u),
		updatetoken.NewClient(gen),
		dial.NewClient(ctx, dial.WithDialOptions(grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))),
		connect.NewClient(),
	)
}

// clientContext returns a context for a client chain's background work, ended by the first of
// the test's cleanups registered so far to run.
func clientContext(t testing.TB, ctx context.Context) context.Context {
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

// rawConn is a plain gRPC connection to u, for what a client chain would never send.
func rawConn(t testing.TB, u *url.URL) *grpc.ClientConn {
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// watcher is a subscriber to the endpoint's MonitorConnections.
type watcher struct {
	t      testing.TB
	stream networkservice.MonitorConnection_MonitorConnectionsClient
}

func watch(t testing.TB, ctx context.Context, u *url.URL) *watcher {
	stream, err := networkservice.NewMonitorConnectionClient(rawConn(t, u)).
		MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	return &watcher{t: t, stream: stream}
}

// next waits for the next event and checks its type; it returns the event's connections.
func (w *watcher) next(want networkservice.ConnectionEventType) map[string]*networkservice.Connection {
	w.t.Helper()
	event, err := w.stream.Recv()
	require.NoError(w.t, err)
	require.Equal(w.t, want, event.GetType())
	return event.GetConnections()
}

func addrs(conn *networkservice.Connection) (src, dst []string) {
	ipc := conn.GetContext().GetIpContext()
	return ipc.GetSrcIpAddrs(), ipc.GetDstIpAddrs()
}

// srcOf returns the client's addresses on conn.
func srcOf(conn *networkservice.Connection) []string {
	return conn.GetContext().GetIpContext().GetSrcIpAddrs()
}

func TestClientGetsDualStackConnection(t *testing.T) {
	ctx, _ := begins(t)
	u := socketURL(t)
	n := serve(t, ctx, u)

	conn, err := newClient(t, ctx, u).Request(ctx, request())
	require.NoError(t, err)

	src, dst := addrs(conn)
	require.Equal(t, []string{"10.0.0.2/32", "fd00::2/128"}, src)
	require.Equal(t, []string{"10.0.0.1/32", "fd00::1/128"}, dst)
	require.Equal(t, kernel.MECHANISM, conn.GetMechanism().GetType())
	segs := conn.GetPath().GetPathSegments()
	require.Len(t, segs, 2)
	require.Zero(t, conn.GetPath().GetIndex(), "the client sees its own segment")
	require.Equal(t, segs[0].GetId(), conn.GetId())
	for i, name := range []string{"nsc", "nse"} {
		require.Equal(t, name, segs[i].GetName())
		require.NotEmpty(t, segs[i].GetToken(), "segment %d", i)
		require.Equal(t, start.Add(lifetime).UTC(), segs[i].GetExpires().AsTime(), "segment %d", i)
	}
	require.Equal(t, []string{segs[1].GetId()}, n.rec.Open(), "the endpoint holds the connection by its own ID")
}

func TestTimeoutWithoutRefreshClosesAndReleases(t *testing.T) {
	ctx, fake := begins(t)
	u := socketURL(t)
	n := serve(t, ctx, u)
	w := watch(t, ctx, u)
	w.next(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER)

	nsc := bareClient(t, ctx, u)
	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	w.next(networkservice.ConnectionEventType_UPDATE)
	id := conn.GetPath().GetPathSegments()[1].GetId()

	fake.Advance(lifetime - time.Second) // a timer not yet due never starts: nothing can close now
	require.Empty(t, n.rec.Closes())

	fake.Advance(time.Second) // the client's token expires, and nobody refreshed it
	deleted := w.next(networkservice.ConnectionEventType_DELETE)
	require.Contains(t, deleted, id)
	require.Len(t, n.rec.Closes(), 1)
	require.Empty(t, n.rec.Open())

	again, err := bareClient(t, ctx, u).Request(ctx, request())
	require.NoError(t, err)
	w.next(networkservice.ConnectionEventType_UPDATE)
	require.Equal(t, srcOf(conn), srcOf(again), "the timed-out connection's addresses were released")

	// The client closing late is accepted and frees nothing: the addresses are someone else's now.
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	third, err := bareClient(t, ctx, u).Request(ctx, request())
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.4/32", "fd00::4/128"}, srcOf(third))
}

func TestCloseReleasesAddresses(t *testing.T) {
	ctx, _ := begins(t)
	u := socketURL(t)
	n := serve(t, ctx, u)
	nsc := newClient(t, ctx, u)

	first, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	second, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	firstSrc, firstDst := addrs(first)
	secondSrc, _ := addrs(second)
	require.NotEqual(t, firstSrc, secondSrc)

	_, err = nsc.Close(ctx, first)
	require.NoError(t, err)
	third, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	thirdSrc, thirdDst := addrs(third)
	require.Equal(t, firstSrc, thirdSrc)
	require.Equal(t, firstDst, thirdDst)

	for _, c := range []*networkservice.Connection{second, third} {
		_, err = nsc.Close(ctx, c)
		require.NoError(t, err)
	}
	require.Empty(t, n.rec.Open())
}

func TestMonitorSeesRequestAndClose(t *testing.T) {
	ctx, _ := begins(t)
	u := socketURL(t)
	serve(t, ctx, u)
	w := watch(t, ctx, u)
	require.Empty(t, w.next(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER))

	nsc := newClient(t, ctx, u)
	conn, err := nsc.Request(ctx, request())
	require.NoError(t, err)
	id := conn.GetPath().GetPathSegments()[1].GetId()
	updated := w.next(networkservice.ConnectionEventType_UPDATE)
	require.Contains(t, updated, id)
	require.Equal(t, srcOf(conn), srcOf(updated[id]))

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Contains(t, w.next(networkservice.ConnectionEventType_DELETE), id)

	// A late subscriber starts from the state as it is now: empty.
	require.Empty(t, watch(t, ctx, u).next(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER))
}

func TestBadRequestsAreRefusedAndLeaveNothing(t *testing.T) {
	ctx, fake := begins(t)
	u := socketURL(t)
	n := serve(t, ctx, u)
	raw := networkservice.NewNetworkServiceClient(rawConn(t, u))

	// clientSegment is the segment of a caller "nsc" whose token was made at made.
	clientSegment := func(made time.Time) *networkservice.PathSegment {
		tok, exp, err := token.NewInsecure(lifetime, token.WithClock(clock.NewFake(made)), token.WithName("nsc"))(nil)
		require.NoError(t, err)
		return &networkservice.PathSegment{Name: "nsc", Id: "nsc-1", Token: tok, Expires: timestamppb.New(exp)}
	}
	withPath := func(index uint32, segs ...*networkservice.PathSegment) func(*networkservice.NetworkServiceRequest) {
		return func(r *networkservice.NetworkServiceRequest) {
			r.Connection.Id = "nsc-1"
			r.Connection.Path = &networkservice.Path{Index: index, PathSegments: segs}
		}
	}
	withIP := func(ipc *networkservice.IPContext) func(*networkservice.NetworkServiceRequest) {
		return func(r *networkservice.NetworkServiceRequest) {
			r.Connection.Context = &networkservice.ConnectionContext{IpContext: ipc}
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*networkservice.NetworkServiceRequest)
		code   codes.Code
		says   []string
	}{
		{
			name:   "no network service",
			change: func(r *networkservice.NetworkServiceRequest) { r.Connection.NetworkService = "" },
			code:   codes.InvalidArgument,
			says:   []string{"validate:", "connection.network_service", "empty name"},
		},
		{
			name:   "bad CIDR in excluded prefixes",
			change: withIP(&networkservice.IPContext{ExcludedPrefixes: []string{"10.0.0.0/33"}}),
			code:   codes.InvalidArgument,
			says:   []string{"excluded_prefixes[0]", "10.0.0.0/33"},
		},
		{
			name:   "bad source address",
			change: withIP(&networkservice.IPContext{SrcIpAddrs: []string{"fd00::zz/128"}}),
			code:   codes.InvalidArgument,
			says:   []string{"src_ip_addrs[0]", "fd00::zz/128"},
		},
		{
			name: "unknown mechanism type",
			change: func(r *networkservice.NetworkServiceRequest) {
				r.MechanismPreferences = []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: "TELEPATHY"}}
			},
			code: codes.InvalidArgument,
			says: []string{"mechanism_preferences[0].type", `unknown mechanism type "TELEPATHY"`},
		},
		{
			name: "mechanism the endpoint does not offer, refused after addresses were given",
			change: func(r *networkservice.NetworkServiceRequest) {
				r.MechanismPreferences = []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: memif.MECHANISM}}
			},
			code: codes.InvalidArgument,
			says: []string{"mechanisms:", "MEMIF", "supports KERNEL"},
		},
		{
			name:   "no mechanism offered",
			change: func(r *networkservice.NetworkServiceRequest) { r.MechanismPreferences = nil },
			code:   codes.InvalidArgument,
			says:   []string{"mechanisms:", "offers no mechanism"},
		},
		{
			name:   "caller's token expired",
			change: withPath(0, clientSegment(start.Add(-2*lifetime))),
			code:   codes.PermissionDenied,
			says:   []string{"authorize:", "segment 0 (nsc)", "expired"},
		},
		{
			name:   "caller's segment has no token",
			change: withPath(0, &networkservice.PathSegment{Name: "nsc", Id: "nsc-1"}),
			code:   codes.PermissionDenied,
			says:   []string{"authorize:", "segment 0 (nsc): no token"},
		},
		{
			name:   "path index out of range",
			change: withPath(3, clientSegment(start)),
			code:   codes.InvalidArgument,
			says:   []string{"path index 3", "1 segments"},
		},
		{
			name: "connection ID is not the caller's segment ID",
			change: func(r *networkservice.NetworkServiceRequest) {
				withPath(0, clientSegment(start))(r)
				r.Connection.Id = "someone-else"
			},
			code: codes.InvalidArgument,
			says: []string{"updatepath:", `"someone-else"`, `"nsc-1"`},
		},
		{
			name: "two segments share an ID",
			change: withPath(0, clientSegment(start),
				&networkservice.PathSegment{Name: "nse", Id: "nsc-1"}),
			code: codes.PermissionDenied,
			says: []string{"authorize:", "share the ID"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request()
			tc.change(req)
			_, err := raw.Request(ctx, req)
			require.Error(t, err)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			for _, s := range tc.says {
				require.Contains(t, status.Convert(err).Message(), s)
			}
			t.Log(status.Convert(err).Message())
		})
	}

	require.Empty(t, watch(t, ctx, u).next(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER),
		"no refused request left a connection")
	require.Empty(t, n.rec.Open())
	require.Zero(t, fake.Pending(), "no refused request left a timeout behind")
	conn, err := newClient(t, ctx, u).Request(ctx, request())
	require.NoError(t, err)
	src, dst := addrs(conn)
	require.Equal(t, []string{"10.0.0.2/32", "fd00::2/128"}, src, "no refused request kept an address")
	require.Equal(t, []string{"10.0.0.1/32", "fd00::1/128"}, dst)
}

func BenchmarkEndpointRequestClose(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	u := socketURL(b)
	serve(b, ctx, u)
	nsc := client.NewClient(clientContext(b, ctx), client.WithClientURL(u))
	b.ReportAllocs()
	for b.Loop() {
		conn, err := nsc.Request(ctx, request())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nsc.Close(ctx, conn); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWithAuthorizeServerDecides: the element given with WithAuthorizeServer is the one that
// authorizes: its refusal reaches the client over gRPC and nothing after it runs.
func TestWithAuthorizeServerDecides(t *testing.T) {
	ctx, _ := begins(t)
	u := socketURL(t)
	rec := checks.NewServer()
	ctx, cancel := context.WithCancel(ctx)
	ep := endpoint.NewServer(ctx, insecureGen(ctx, "nse"), endpoint.WithName("nse"),
		endpoint.WithAuthorizeServer(inject.NewServer(status.Error(codes.PermissionDenied, "mine says no"))),
		endpoint.WithAdditionalFunctionality(rec))
	errs, err := endpoint.Serve(ctx, u, ep)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	_, err = bareClient(t, ctx, u).Request(ctx, request())
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "mine says no")
	require.Empty(t, rec.Requests())
	require.Panics(t, func() { endpoint.WithAuthorizeServer(nil) })
}
