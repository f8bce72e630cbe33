//go:build !race

// The interop test is kept out of the race detector's run (`make test` runs it without -race,
// beside the race run): its next hop restarts between calls, so a call may pick the client's
// dying transport and send its file there, and grpcfd v1.1.4 (the version vwire is held to)
// races on that transport itself: connWrap.close sets its closed flag on the receive executor
// while SendFD reads it on the send executor. The race is inside the library, not in vwire's
// elements, which this test checks.

package sendfd_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edwarnicke/grpcfd"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"
)

// nsmNsmgr answers as NSM's nsmgr does where the descriptors are concerned: the namespace of
// every call (each preference and the connection's mechanism) must be an inode URL whose file
// came with the call, else the call fails; the answer names it by the same inode URL.
type nsmNsmgr struct {
	mu    sync.Mutex
	calls []string // "Request <inode URL>" or "Close <inode URL>": each call's files that came
}

func (s *nsmNsmgr) receive(ctx context.Context, what string, mechs ...*networkservice.Mechanism) error {
	recv, ok := grpcfd.FromContext(ctx)
	if !ok {
		return status.Error(codes.Internal, "nsm nsmgr: no grpcfd transceiver")
	}
	got := map[string]bool{}
	for _, mech := range mechs {
		u := mech.GetParameters()[common.InodeURL]
		if u == "" || got[u] {
			continue
		}
		got[u] = true
		files, err := recv.RecvFileByURL(u) // as NSM's recvfd: an inode URL, or an error
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "nsm nsmgr: %s: %v", u, err)
		}
		select {
		case f := <-files:
			got, err := grpcfd.FileToURL(f)
			_ = f.Close()
			if err != nil || got.String() != u {
				return status.Errorf(codes.Internal, "nsm nsmgr: %s came as %v (%v)", u, got, err)
			}
		case <-time.After(time.Second):
			return status.Errorf(codes.DeadlineExceeded, "nsm nsmgr: %s did not come", u)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for u := range got {
		s.calls = append(s.calls, what+" "+u)
	}
	return nil
}

func (s *nsmNsmgr) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if err := s.receive(ctx, "Request", append(req.GetMechanismPreferences(), req.GetConnection().GetMechanism())...); err != nil {
		return nil, err
	}
	conn := req.GetConnection().Clone()
	if conn.GetMechanism() == nil {
		conn.Mechanism = req.GetMechanismPreferences()[0].Clone()
	}
	segs := conn.GetPath().GetPathSegments()
	conn.Path.PathSegments = append(segs[:conn.GetPath().GetIndex()+1], &networkservice.PathSegment{
		Name: "nsm-nsmgr", Id: "nsmgr-" + conn.GetId(), Token: segs[0].GetToken(), Expires: segs[0].GetExpires(),
	})
	return conn, nil
}

func (s *nsmNsmgr) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if err := s.receive(ctx, "Close", conn.GetMechanism()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (s *nsmNsmgr) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// TestInteropWithNSMsNsmgr: vwire's client chain requests, refreshes and closes through a next
// hop that behaves as NSM's nsmgr, which restarts before each later call, so that a file sent
// over an earlier connection cannot stand in for one the call did not carry. Every call carries
// the namespace's descriptor, and the client keeps naming its namespace by its own path.
func TestInteropWithNSMsNsmgr(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	netns := filepath.Join(dir, "netns")
	require.NoError(t, os.WriteFile(netns, nil, 0o600))
	inode, err := fdpass.PathURL(netns)
	require.NoError(t, err)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nsm.sock")}
	nsmgr := &nsmNsmgr{}
	restart := func() func() {
		ctx, cancel := context.WithCancel(context.Background())
		errs, err := grpcserve.Serve(ctx, u, grpcserve.RegistrarFunc(func(s *grpc.Server) {
			networkservice.RegisterNetworkServiceServer(s, nsmgr)
		}))
		require.NoError(t, err)
		return func() {
			cancel()
			for range errs {
			}
		}
	}
	stop := restart()
	defer func() { stop() }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nsc := client.NewClient(ctx, client.WithName("nsc"), client.WithClientURL(u), client.WithoutHeal(), client.WithoutRetry())
	req := request("file://" + netns)
	conn, err := nsc.Request(ctx, req)
	require.NoError(t, err)
	require.Equal(t, "file://"+netns, conn.GetMechanism().GetParameters()[common.InodeURL], "the client names its namespace by its own path")

	stop()
	stop = restart()
	req.Connection = conn
	require.Eventually(t, func() bool {
		conn, err = nsc.Request(ctx, req) // the refresh, once the restarted hop answers
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "file://"+netns, conn.GetMechanism().GetParameters()[common.InodeURL])

	stop()
	stop = restart()
	require.Eventually(t, func() bool {
		_, err = nsc.Close(ctx, conn)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"Request " + inode, "Request " + inode, "Close " + inode}, nsmgr.seen(),
		"the Request, the refresh and the Close each carried the namespace's descriptor")
}
