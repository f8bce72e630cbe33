package sendfd_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

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

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// last ends a client chain: it records what reached it and answers with the connection's
// mechanism set to the request's first preference, as a next hop would.
type last struct {
	got  *networkservice.NetworkServiceRequest
	opts int
}

func (l *last) Request(_ context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	l.got, l.opts = req.Clone(), len(opts)
	conn := req.GetConnection().Clone()
	conn.Mechanism = req.GetMechanismPreferences()[0].Clone()
	return conn, nil
}

func (l *last) Close(context.Context, *networkservice.Connection, ...grpc.CallOption) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func request(netns string) *networkservice.NetworkServiceRequest {
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetNetNSURL(netns)
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{Id: "c", NetworkService: "svc"},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	}
}

func netnsOf(req *networkservice.NetworkServiceRequest) string {
	return req.GetMechanismPreferences()[0].GetParameters()[common.InodeURL]
}

var unixHop = &url.URL{Scheme: "unix", Path: "/run/nsm.sock"}

// TestWhatIsSent: which URLs the client turns into inode URLs with a file beside the call, and
// which it passes on as they are.
func TestWhatIsSent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netns")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	inode, err := fdpass.PathURL(path)
	require.NoError(t, err)
	held := fdpass.NewFiles()
	f, err := os.Open(path)
	require.NoError(t, err)
	held.Put(inode, f)
	t.Cleanup(held.Close)

	for _, tt := range []struct {
		name     string
		hop      *url.URL
		received *fdpass.Files // files this process received with the request: a passthrough hop
		netns    string
		want     string // the URL the next hop gets
		sent     bool   // whether a file goes with the call
	}{
		{name: "own path", hop: unixHop, netns: "file://" + path, want: inode, sent: true},
		{name: "own path over TCP", hop: &url.URL{Scheme: "tcp", Host: "10.0.0.2:5001"}, netns: "file://" + path, want: "file://" + path},
		{name: "own path to a socket passed by descriptor", hop: &url.URL{Scheme: "inode", Host: "4", Path: "/5"}, netns: "file://" + path, want: inode, sent: true},
		{name: "a caller's path is never opened", hop: unixHop, received: fdpass.NewFiles(), netns: "file:///proc/1/ns/net", want: "file:///proc/1/ns/net"},
		{name: "a held file is passed on", hop: unixHop, received: held, netns: inode, want: inode, sent: true},
		{name: "a file not held is not sent", hop: unixHop, received: fdpass.NewFiles(), netns: inode, want: inode},
		{name: "no namespace", hop: unixHop, netns: "", want: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			end := &last{}
			c := chain.NewNetworkServiceClient(sendfd.NewClient(), end)
			ctx := clienturl.WithClientURL(context.Background(), tt.hop)
			if tt.received != nil {
				ctx = fdpass.WithFiles(ctx, tt.received)
			}
			req := request(tt.netns)
			conn, err := c.Request(ctx, req)
			require.NoError(t, err)
			require.Equal(t, tt.want, netnsOf(end.got), "the next hop's URL")
			require.Equal(t, tt.sent, end.opts == 1, "per-RPC credentials carry a file")
			require.Equal(t, tt.netns, netnsOf(req), "the caller's request is left as it was")
			require.Equal(t, tt.netns, conn.GetMechanism().GetParameters()[common.InodeURL], "the caller gets its URL back")
		})
	}
}

// TestAPathThatCannotBeSentIsRefused: a client's own path that does not exist fails the Request
// with InvalidArgument naming it, and the request is left as it was.
func TestAPathThatCannotBeSentIsRefused(t *testing.T) {
	end := &last{}
	c := chain.NewNetworkServiceClient(sendfd.NewClient(), end)
	req := request("file:///nonexistent/netns")
	_, err := c.Request(clienturl.WithClientURL(context.Background(), unixHop), req)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "file:///nonexistent/netns")
	require.Nil(t, end.got, "nothing went out")
	require.Equal(t, "file:///nonexistent/netns", netnsOf(req))
}
