package recvfd_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/recvfd"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const lifetime = time.Minute

var start = time.Unix(1_700_000_000, 0)

// probe records the file the connection's mechanism names, as the elements after recvfd get it,
// and takes the first preference as the mechanism.
type probe struct {
	mu    sync.Mutex
	files []*os.File // one per Request that reached it
	set   string     // a URL the probe puts in the answer's mechanism, if not empty
}

func (p *probe) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if req.GetConnection().GetMechanism() == nil {
		req.GetConnection().Mechanism = req.GetMechanismPreferences()[0].Clone()
	}
	f := fdpass.FromContext(ctx).Get(req.GetConnection().GetMechanism().GetParameters()[common.InodeURL])
	p.mu.Lock()
	p.files = append(p.files, f)
	p.mu.Unlock()
	conn, err := next.Server(ctx).Request(ctx, req)
	if err == nil && p.set != "" {
		conn.GetMechanism().GetParameters()[common.InodeURL] = p.set
	}
	return conn, err
}

func (p *probe) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (p *probe) seen() []*os.File {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*os.File(nil), p.files...)
}

// begins returns a test context on a fake clock; the deadline only guards against a hang.
func begins(t *testing.T) (context.Context, *clock.Fake) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	fake := clock.NewFake(start)
	return clock.WithClock(ctx, fake), fake
}

// tempDir is a short directory for sockets and files, removed after the test.
func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// file makes a file whose path a client names.
func file(t *testing.T, dir, name string) string {
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	return path
}

// serve serves an endpoint with recvfd, extra and p on a unix socket in dir.
func serve(t *testing.T, ctx context.Context, dir string, p *probe, extra ...networkservice.NetworkServiceServer) *url.URL {
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	ctx, cancel := context.WithCancel(ctx)
	ep := endpoint.NewServer(ctx, token.NewInsecure(lifetime, token.WithClock(clock.FromContext(ctx)), token.WithName("nse")),
		endpoint.WithName("nse"),
		endpoint.WithAdditionalFunctionality(append(append([]networkservice.NetworkServiceServer{recvfd.NewServer()}, extra...), p)...))
	errs, err := endpoint.Serve(ctx, u, ep)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return u
}

// newClient is a client chain without refresh, heal or retry, that sends and receives files and
// closes its gRPC connection with its last connection; probes see each answer after recvfd.
func newClient(t *testing.T, ctx context.Context, u *url.URL, probes ...networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	gen := token.NewInsecure(lifetime, token.WithClock(clock.FromContext(ctx)), token.WithName("nsc"))
	elements := []networkservice.NetworkServiceClient{
		updatepath.NewClient("nsc"),
		begin.NewClient(),
		metadata.NewClient(),
		clienturl.NewClient(u),
	}
	elements = append(elements, probes...)
	return chain.NewNetworkServiceClient(append(elements,
		sendfd.NewClient(),
		recvfd.NewClient(),
		updatetoken.NewClient(gen),
		dial.NewClient(ctx, dial.WithIdleTimeout(0), dial.WithDialOptions(grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))),
		connect.NewClient(),
	)...)
}

func request(netns string) *networkservice.NetworkServiceRequest {
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetNetNSURL(netns)
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "svc"},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	}
}

func inodeOf(t *testing.T, path string) string {
	u, err := fdpass.PathURL(path)
	require.NoError(t, err)
	return u
}

func urlOf(t *testing.T, f *os.File) string {
	require.NotNil(t, f, "the elements after recvfd get the file")
	u, err := fdpass.URLOf(f)
	require.NoError(t, err)
	return u
}

func closed(f *os.File) bool {
	_, err := f.Stat()
	return errors.Is(err, os.ErrClosed)
}

// TestTheClientsFileIsHeldUntilClose: a client names its file by path; the server's elements get
// the very file (same inode) under its inode URL, on the first Request and on a refresh, and the
// file is closed on Close. The client gets its own URL back and its request is left as it was.
func TestTheClientsFileIsHeldUntilClose(t *testing.T) {
	ctx, _ := begins(t)
	dir := tempDir(t)
	p := &probe{}
	u := serve(t, ctx, dir, p)
	path := file(t, dir, "netns")
	nsc := newClient(t, ctx, u)

	req := request("file://" + path)
	conn, err := nsc.Request(ctx, req)
	require.NoError(t, err)
	require.Equal(t, "file://"+path, conn.GetMechanism().GetParameters()[common.InodeURL], "the client gets its own URL back")
	require.Equal(t, "file://"+path, req.GetMechanismPreferences()[0].GetParameters()[common.InodeURL], "the caller's request is as it gave it")
	require.Equal(t, inodeOf(t, path), urlOf(t, p.seen()[0]))

	req.Connection = conn
	_, err = nsc.Request(ctx, req)
	require.NoError(t, err)
	require.Same(t, p.seen()[0], p.seen()[1], "a refresh uses the file the connection holds")

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.True(t, closed(p.seen()[0]), "Close closes the connection's file")
}

// TestAFileNotSentIsRefused: an inode URL whose file the caller did not send (a client naming a
// namespace it does not hold) is refused with PermissionDenied before the rest of the chain.
func TestAFileNotSentIsRefused(t *testing.T) {
	ctx, _ := begins(t)
	dir := tempDir(t)
	p := &probe{}
	u := serve(t, ctx, dir, p)
	_, err := newClient(t, ctx, u).Request(ctx, request(inodeOf(t, "/proc/self/ns/net")))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "was not sent beside the call")
	require.Empty(t, p.seen(), "nothing after recvfd ran")
}

// TestATimedOutConnectionsFileIsClosed: the server's timeout closes a connection whose client
// stopped refreshing, and with it the file.
func TestATimedOutConnectionsFileIsClosed(t *testing.T) {
	ctx, fake := begins(t)
	dir := tempDir(t)
	p := &probe{}
	u := serve(t, ctx, dir, p)
	_, err := newClient(t, ctx, u).Request(ctx, request("file://"+file(t, dir, "netns")))
	require.NoError(t, err)
	f := p.seen()[0]
	require.False(t, closed(f))
	fake.Advance(lifetime)
	require.Eventually(t, func() bool { return closed(f) }, 10*time.Second, time.Millisecond)
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// TestNothingLeaks: connections with files of their own, each requested, refreshed and closed,
// leave no descriptor open once the client's gRPC connection is gone.
func TestNothingLeaks(t *testing.T) {
	ctx, _ := begins(t)
	dir := tempDir(t)
	u := serve(t, ctx, dir, &probe{})
	nsc := newClient(t, ctx, u)
	var paths []string
	for i := range 5 {
		paths = append(paths, file(t, dir, "netns"+string(rune('a'+i))))
	}
	before := openFDs(t)
	for _, path := range paths {
		req := request("file://" + path)
		conn, err := nsc.Request(ctx, req)
		require.NoError(t, err)
		for range 3 {
			req.Connection = conn
			conn, err = nsc.Request(ctx, req)
			require.NoError(t, err)
		}
		_, err = nsc.Close(ctx, conn)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return openFDs(t) <= before }, 10*time.Second, 5*time.Millisecond,
		"open descriptors: %d before, %d after", before, openFDs(t))
}

// clientProbe records the file the answer's mechanism names, as the elements before recvfd's
// client see it on the way back.
type clientProbe struct{ got *os.File }

func (c *clientProbe) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	conn, err := next.Client(ctx).Request(ctx, req, opts...)
	if err == nil {
		c.got = recvfd.ClientFiles(ctx).Get(conn.GetMechanism().GetParameters()[common.InodeURL])
	}
	return conn, err
}

func (c *clientProbe) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

// TestTheEndpointsFileComesBack: an endpoint names its own file by path in its answer; sendfd's
// server sends it, and the client's elements get it under the inode URL of the answer.
func TestTheEndpointsFileComesBack(t *testing.T) {
	ctx, _ := begins(t)
	dir := tempDir(t)
	path := file(t, dir, "nse-netns")
	u := serve(t, ctx, dir, &probe{set: "file://" + path}, sendfd.NewServer())
	c := &clientProbe{}
	conn, err := newClient(t, ctx, u, c).Request(ctx, request("file://"+file(t, dir, "nsc-netns")))
	require.NoError(t, err)
	require.Equal(t, inodeOf(t, path), conn.GetMechanism().GetParameters()[common.InodeURL])
	require.Equal(t, inodeOf(t, path), urlOf(t, c.got))
}

// TestAnEndpointNotSendingItsFileIsRefused: an answer naming an inode URL whose file did not
// come fails the first Request with PermissionDenied, and the endpoint's connection is closed.
func TestAnEndpointNotSendingItsFileIsRefused(t *testing.T) {
	ctx, _ := begins(t)
	dir := tempDir(t)
	closes := make(chan struct{}, 1)
	u := serve(t, ctx, dir, &probe{set: inodeOf(t, "/proc/self/ns/net")}, onClose(closes))
	_, err := newClient(t, ctx, u).Request(ctx, request("file://"+file(t, dir, "nsc-netns")))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	<-closes
}

// onClose signals every Close that reaches it.
type onClose chan struct{}

func (o onClose) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return next.Server(ctx).Request(ctx, req)
}

func (o onClose) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	o <- struct{}{}
	return next.Server(ctx).Close(ctx, conn)
}
