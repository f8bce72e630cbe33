package connect_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/hopurl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func unixURL(t *testing.T, name string) *url.URL {
	return &url.URL{Scheme: "unix", Path: filepath.Join(tempDir(t), name)}
}

// serve serves srv on u over gRPC until the test ends and returns the URL it listens on.
func serve(t *testing.T, u *url.URL, srv networkservice.NetworkServiceServer) *url.URL {
	t.Helper()
	ln, err := hopurl.Listen(u)
	require.NoError(t, err)
	g := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(g, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(ln) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return hopurl.FromAddr(ln.Addr())
}

// clientChain is a client that reaches the URL in its context, closed with the test.
func clientChain(t *testing.T, opts ...dial.Option) networkservice.NetworkServiceClient {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return chain.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), dial.NewClient(ctx, opts...), connect.NewClient())
}

func to(u *url.URL) context.Context { return clienturl.WithClientURL(context.Background(), u) }

func req(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}
}

func TestClientRequestAndClose(t *testing.T) {
	rec := checks.NewServer()
	u := serve(t, unixURL(t, "nse.sock"), rec)
	c := clientChain(t)

	r := req("c1")
	r.GetConnection().NetworkService = "icmp-responder"
	conn, err := c.Request(to(u), r)
	require.NoError(t, err)
	require.Equal(t, "icmp-responder", conn.GetNetworkService(), "the next hop's reply comes back")
	require.Equal(t, []string{"c1"}, rec.Open())
	_, err = c.Close(to(u), conn)
	require.NoError(t, err)
	require.Empty(t, rec.Open())
}

func TestNextHopErrorsKeepCodeAndDetails(t *testing.T) {
	detail := &networkservice.Connection{Id: "why"}
	st, err := status.New(codes.NotFound, "discover: no endpoint for icmp-responder").WithDetails(detail)
	require.NoError(t, err)
	fail := inject.NewServer(st.Err())
	fail.FailCloses(status.Error(codes.PermissionDenied, "authorize: close refused"))
	u := serve(t, unixURL(t, "nse.sock"), fail)
	c := clientChain(t)

	_, err = c.Request(to(u), req("c1"))
	got := status.Convert(err)
	require.Equal(t, codes.NotFound, got.Code())
	require.Equal(t, "connect: next hop "+u.String()+": discover: no endpoint for icmp-responder", got.Message())
	require.Len(t, got.Details(), 1)
	require.True(t, proto.Equal(detail, got.Details()[0].(proto.Message)))

	_, err = c.Close(to(u), &networkservice.Connection{Id: "c1"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, "connect: next hop "+u.String()+": authorize: close refused", status.Convert(err).Message())
}

// freeTCP returns a tcp URL on host where nothing listens.
func freeTCP(t *testing.T, host string) *url.URL {
	ln, err := hopurl.Listen(&url.URL{Scheme: "tcp", Host: host + ":0"})
	require.NoError(t, err)
	u := hopurl.FromAddr(ln.Addr())
	require.NoError(t, ln.Close())
	return u
}

func TestUnreachableNextHop(t *testing.T) {
	tests := []struct {
		name       string
		url        func(t *testing.T) *url.URL
		wantReason string
	}{
		{name: "unix socket missing", url: func(t *testing.T) *url.URL { return unixURL(t, "gone.sock") }, wantReason: "no such file or directory"},
		{name: "tcp4 refused", url: func(t *testing.T) *url.URL { return freeTCP(t, "127.0.0.1") }, wantReason: "connection refused"},
		{name: "tcp6 refused", url: func(t *testing.T) *url.URL { return freeTCP(t, "[::1]") }, wantReason: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.url(t)
			c := clientChain(t, dial.WithDialTimeout(time.Minute)) // refusal is quick; no timeout needed
			ctx, cancel := context.WithTimeout(to(u), 30*time.Second)
			defer cancel()
			_, err := c.Request(ctx, req("c1"))
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			msg := status.Convert(err).Message()
			require.Contains(t, msg, "connect: next hop "+u.String()+": ")
			require.Contains(t, msg, tt.wantReason)
			require.NoError(t, ctx.Err(), "failed before the caller's deadline")
		})
	}
}

func TestClientWithoutDial(t *testing.T) {
	c := connect.NewClient()
	_, err := c.Request(context.Background(), req("c1"))
	require.Equal(t, codes.Internal, status.Code(err))
	require.Contains(t, err.Error(), "put dial before connect")
	_, err = c.Close(context.Background(), &networkservice.Connection{Id: "c1"})
	require.Equal(t, codes.Internal, status.Code(err))
}

// passthrough serves a component that passes every connection on to endpoint, as an nsmgr or
// a forwarder does: its server chain ends in connect.NewServer over its own client chain.
func passthrough(t *testing.T, endpoint *url.URL) *url.URL {
	return serve(t, &url.URL{Scheme: "tcp", Host: "[::1]:0"}, chain.NewNetworkServiceServer(
		begin.NewServer(),
		metadata.NewServer(),
		clienturl.NewServer(endpoint),
		connect.NewServer(clientChain(t)),
	))
}

// stamp marks the connection the endpoint returns, to see it come back through every hop.
type stamp struct{}

func (stamp) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	conn.Labels = map[string]string{"answered-by": "endpoint"}
	return conn, nil
}

func (stamp) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestServerPassesThrough(t *testing.T) {
	rec := checks.NewServer()
	fail := inject.NewServer(nil)
	endpoint := serve(t, unixURL(t, "nse.sock"), chain.NewNetworkServiceServer(fail, rec, stamp{}))
	mid := passthrough(t, endpoint)
	nsc := clientChain(t)

	conn, err := nsc.Request(to(mid), req("c1"))
	require.NoError(t, err)
	require.Equal(t, "endpoint", conn.GetLabels()["answered-by"], "the endpoint's reply is returned")
	require.Equal(t, []string{"c1"}, rec.Open())

	_, err = nsc.Close(to(mid), conn)
	require.NoError(t, err)
	require.Empty(t, rec.Open())

	fail.FailRequests(status.Error(codes.ResourceExhausted, "ipam: no addresses left in 10.0.0.0/30"))
	_, err = nsc.Request(to(mid), req("c2"))
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Equal(t,
		"connect: next hop "+mid.String()+": connect: next hop "+endpoint.String()+": ipam: no addresses left in 10.0.0.0/30",
		status.Convert(err).Message(), "the error names every hop it crossed")
}

func TestServerUndoesWhenRestFails(t *testing.T) {
	downstream := checks.NewServer()
	seen := &closeCtx{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The rest fails after the caller's context is spent, as on a timeout.
	rest := spend{cancel: cancel, err: status.Error(codes.Internal, "kernel: plumb failed")}
	srv := chain.NewNetworkServiceServer(
		connect.NewServer(chain.NewNetworkServiceClient(adapters.NewServerToClient(seen), adapters.NewServerToClient(downstream))),
		rest,
	)

	_, err := srv.Request(ctx, req("c1"))
	require.Equal(t, codes.Internal, status.Code(err))
	require.Len(t, downstream.Requests(), 1)
	require.Len(t, downstream.Closes(), 1, "what the next hop opened is closed")
	require.Empty(t, downstream.Open())
	require.NoError(t, seen.err, "the undo gets a fresh deadline")
	require.True(t, seen.hasDeadline)
}

// spend cancels the caller's context and fails.
type spend struct {
	cancel context.CancelFunc
	err    error
}

func (s spend) Request(context.Context, *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s.cancel()
	return nil, s.err
}

func (s spend) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// closeCtx records the state of the context a Close came with.
type closeCtx struct {
	err         error
	hasDeadline bool
}

func (c *closeCtx) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return next.Server(ctx).Request(ctx, req)
}

func (c *closeCtx) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	c.err = ctx.Err()
	_, c.hasDeadline = ctx.Deadline()
	return next.Server(ctx).Close(ctx, conn)
}

func TestServerCloseReachesBothSides(t *testing.T) {
	tests := []struct {
		name      string
		clientErr error
		restErr   error
		wantCode  codes.Code
	}{
		{name: "both succeed", wantCode: codes.OK},
		{name: "next hop fails", clientErr: status.Error(codes.Unavailable, "gone"), wantCode: codes.Unavailable},
		{name: "rest fails", restErr: status.Error(codes.Internal, "kernel: del link"), wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			downstream := checks.NewServer()
			clientFail := inject.NewServer(nil)
			clientFail.FailCloses(tt.clientErr)
			restRec := checks.NewServer()
			restFail := inject.NewServer(nil)
			restFail.FailCloses(tt.restErr)
			srv := chain.NewNetworkServiceServer(
				connect.NewServer(chain.NewNetworkServiceClient(adapters.NewServerToClient(clientFail), adapters.NewServerToClient(downstream))),
				restFail, restRec,
			)
			_, err := srv.Close(context.Background(), &networkservice.Connection{Id: "c1"})
			require.Equal(t, tt.wantCode, status.Code(err))
			require.Len(t, downstream.Closes(), 1)
			require.Len(t, restRec.Closes(), 1)
		})
	}
}

func TestServerGivesClientACopy(t *testing.T) {
	rest := checks.NewServer()
	srv := chain.NewNetworkServiceServer(connect.NewServer(adapters.NewServerToClient(relabel{})), rest)
	r := req("c1")
	r.GetConnection().Labels = map[string]string{"side": "server"}
	conn, err := srv.Request(context.Background(), r)
	require.NoError(t, err)
	require.Equal(t, "client", conn.GetLabels()["side"], "the next hop's connection goes on")
	require.Equal(t, "client", rest.Requests()[0].GetConnection().GetLabels()["side"])

	// A client chain that changes the request and fails leaves the server's request alone.
	failing := chain.NewNetworkServiceClient(adapters.NewServerToClient(relabel{}), adapters.NewServerToClient(inject.NewServer(status.Error(codes.Unavailable, "gone"))))
	srv = chain.NewNetworkServiceServer(connect.NewServer(failing), rest)
	r = req("c2")
	r.GetConnection().Labels = map[string]string{"side": "server"}
	_, err = srv.Request(context.Background(), r)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, "server", r.GetConnection().GetLabels()["side"])
}

// relabel changes the request it gets, as a client chain's updatepath would.
type relabel struct{}

func (relabel) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().GetLabels()["side"] = "client"
	return next.Server(ctx).Request(ctx, req)
}

func (relabel) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestNewServerNilPanics(t *testing.T) {
	require.PanicsWithValue(t, "connect: NewServer needs a client chain, got nil", func() { connect.NewServer(nil) })
}
