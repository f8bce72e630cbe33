package updatetoken_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/common/updatetoken"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	start     = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	callerExp = start.Add(30 * time.Second)
)

// fixed is a generator answering name's token and start+1m, recording the auth info it got.
type fixed struct {
	name string
	got  []credentials.AuthInfo
	err  error
}

func (f *fixed) gen(ai credentials.AuthInfo) (string, time.Time, error) {
	f.got = append(f.got, ai)
	return "token-of-" + f.name, start.Add(time.Minute), f.err
}

func path(index uint32, names ...string) *networkservice.Connection {
	c := &networkservice.Connection{Id: names[index], Path: &networkservice.Path{Index: index}}
	for _, n := range names {
		c.Path.PathSegments = append(c.Path.PathSegments, &networkservice.PathSegment{Name: n, Id: n, Token: "written-by-" + n})
	}
	return c
}

func withCallerToken(ctx context.Context) context.Context {
	return metadata.NewIncomingContext(ctx, metadata.Pairs(
		token.TokenKey, "sent-by-caller", token.ExpiresKey, callerExp.Format(time.RFC3339Nano)))
}

func TestTokens(t *testing.T) {
	type want struct{ caller, own string }
	tests := []struct {
		name     string
		client   bool
		conn     *networkservice.Connection
		incoming bool
		want     want // tokens of segment index-1 and index as next sees them
	}{
		{"server takes the caller's token from the call", false, path(1, "nsc", "nsmgr"), true, want{"sent-by-caller", "token-of-nsmgr"}},
		{"server without credentials keeps the caller's segment", false, path(1, "nsc", "nsmgr"), false, want{"written-by-nsc", "token-of-nsmgr"}},
		{"server as the first hop signs its own", false, path(0, "nse"), true, want{"", "token-of-nse"}},
		{"client signs its own only", true, path(1, "nsc", "nsmgr"), true, want{"written-by-nsc", "token-of-nsmgr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index := tt.conn.GetPath().GetIndex()
			g := &fixed{name: tt.conn.GetPath().GetPathSegments()[index].GetName()}
			rec := checks.NewServer()
			ctx := context.Background()
			if tt.incoming {
				ctx = withCallerToken(ctx)
			}
			req := &networkservice.NetworkServiceRequest{Connection: tt.conn}
			var err error
			if tt.client {
				_, err = next.NewNetworkServiceClient(updatetoken.NewClient(g.gen), adapters.NewServerToClient(rec)).Request(ctx, req)
			} else {
				_, err = next.NewNetworkServiceServer(updatetoken.NewServer(g.gen), rec).Request(ctx, req)
			}
			require.NoError(t, err)

			segs := rec.Requests()[0].GetConnection().GetPath().GetPathSegments()
			require.Equal(t, tt.want.own, segs[index].GetToken())
			require.True(t, segs[index].GetExpires().AsTime().Equal(start.Add(time.Minute)))
			if index > 0 {
				require.Equal(t, tt.want.caller, segs[index-1].GetToken())
				if tt.want.caller == "sent-by-caller" {
					require.True(t, segs[index-1].GetExpires().AsTime().Equal(callerExp))
				}
			}
		})
	}
}

func TestGeneratorGetsThePeersAuthInfo(t *testing.T) {
	g := &fixed{name: "nsmgr"}
	info := credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
	_, err := updatetoken.NewServer(g.gen).Request(ctx, &networkservice.NetworkServiceRequest{Connection: path(0, "nsmgr")})
	require.NoError(t, err)
	_, err = updatetoken.NewServer(g.gen).Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: path(0, "nsmgr")})
	require.NoError(t, err)
	require.Equal(t, []credentials.AuthInfo{info, nil}, g.got)
}

func TestBadIndexIsInvalidArgument(t *testing.T) {
	for name, conn := range map[string]*networkservice.Connection{
		"no path":           {Id: "a"},
		"index past a path": {Id: "a", Path: &networkservice.Path{Index: 2, PathSegments: []*networkservice.PathSegment{{Name: "nsc", Id: "a"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			rec := checks.NewServer()
			_, err := next.NewNetworkServiceServer(updatetoken.NewServer((&fixed{}).gen), rec).
				Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			require.ErrorContains(t, err, "put updatepath before updatetoken")
			require.Empty(t, rec.Requests())
		})
	}
}

func TestGeneratorFailure(t *testing.T) {
	g := &fixed{name: "nsmgr", err: errors.New("no SVID yet")}
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(updatetoken.NewServer(g.gen), rec)

	_, err := chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: path(1, "nsc", "nsmgr")})
	require.Equal(t, codes.Internal, status.Code(err))
	require.ErrorContains(t, err, "updatetoken: make the token of nsmgr: no SVID yet")
	require.Empty(t, rec.Requests(), "a request without this hop's token does not pass")

	_, err = chain.Close(context.Background(), path(1, "nsc", "nsmgr"))
	require.NoError(t, err, "Close is never refused")
	require.Len(t, rec.Closes(), 1)
	require.Equal(t, "written-by-nsmgr", rec.Closes()[0].GetPath().GetPathSegments()[1].GetToken())
}

// TestOverGRPC runs a client chain (updatepath, updatetoken, per-RPC credentials) against a
// server chain on a unix socket: the server's view of the client's segment is the token the
// call carried, not the one the client wrote in the path (they differ here by their subject).
func TestOverGRPC(t *testing.T) {
	fake := clock.NewFake(start)
	nscGen := token.NewInsecure(time.Minute, token.WithClock(fake), token.WithName("nsc"))
	callGen := token.NewInsecure(time.Minute, token.WithClock(fake), token.WithName("nsc-transport"))
	mgrGen := token.NewInsecure(time.Minute, token.WithClock(fake), token.WithName("nsmgr"))

	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "nsmgr.sock"))
	require.NoError(t, err)
	rec := checks.NewServer()
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, next.NewNetworkServiceServer(
		updatepath.NewServer("nsmgr"), updatetoken.NewServer(mgrGen), rec))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	cc, err := grpc.NewClient("unix://"+lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(callGen)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	client := next.NewNetworkServiceClient(
		updatepath.NewClient("nsc"), updatetoken.NewClient(nscGen), networkservice.NewNetworkServiceClient(cc))

	conn, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{})
	require.NoError(t, err)
	segs := conn.GetPath().GetPathSegments()
	require.Len(t, segs, 2)
	wantCall, wantCallExp, err := callGen(nil)
	require.NoError(t, err)
	wantMgr, _, err := mgrGen(nil)
	require.NoError(t, err)
	require.Equal(t, wantCall, rec.Requests()[0].GetConnection().GetPath().GetPathSegments()[0].GetToken(),
		"the server's view of the client's segment is the call's token")
	require.Equal(t, wantCall, segs[0].GetToken())
	require.True(t, segs[0].GetExpires().AsTime().Equal(wantCallExp))
	require.Equal(t, wantMgr, segs[1].GetToken())
}

func BenchmarkServerInsecure(b *testing.B) {
	s := updatetoken.NewServer(token.NewInsecure(time.Minute))
	ctx := withCallerToken(context.Background())
	req := &networkservice.NetworkServiceRequest{Connection: path(1, "nsc", "nsmgr")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Request(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
