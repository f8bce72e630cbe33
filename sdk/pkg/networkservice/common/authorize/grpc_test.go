package authorize_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/connect"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// secureEndpoint serves an endpoint chain as hop "nse" of m over mutual TLS on a unix socket,
// authorizing with its identity; rec is the last element of its chain.
func secureEndpoint(t *testing.T, m *mesh, rec *checks.Recorder) *url.URL {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	gen, err := spiffe.Tokens(m.hops["nse"], time.Minute)
	require.NoError(t, err)
	ep := endpoint.NewServer(ctx, gen, endpoint.WithName("nse"),
		endpoint.WithAuthorizeOptions(authorize.WithIdentity(m.hops["nse"])),
		endpoint.WithAdditionalFunctionality(rec))
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	errs, err := endpoint.Serve(ctx, u, ep, grpc.Creds(spiffe.ServerCredentials(m.hops["nse"])))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range errs {
		}
		_ = os.RemoveAll(dir)
	})
	return u
}

// dialAs connects to u as a hop with SVID source src, sending tokens of gen.
func dialAs(t *testing.T, u *url.URL, src spiffe.Source, gen token.GeneratorFunc) (networkservice.NetworkServiceClient, networkservice.MonitorConnectionClient) {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+u.Path,
		grpc.WithTransportCredentials(spiffe.ClientCredentials(src)),
		grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return networkservice.NewNetworkServiceClient(cc), networkservice.NewMonitorConnectionClient(cc)
}

// tokensOf makes hop name's tokens as a component does (addressed to the peer), at a clock
// skewed by skew.
func tokensOf(t *testing.T, src spiffe.Source, skew time.Duration) token.GeneratorFunc {
	t.Helper()
	gen, err := spiffe.Tokens(src, time.Minute, token.WithClock(clock.NewFake(time.Now().Add(skew))))
	require.NoError(t, err)
	return gen
}

// fromClient is a client's first Request, its own segment first.
func fromClient(name, id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			Id:             id,
			NetworkService: "ns",
			Path:           &networkservice.Path{PathSegments: []*networkservice.PathSegment{{Name: name, Id: id}}},
		},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: "LOCAL", Type: kernel.MECHANISM}},
	}
}

// TestAttacksOverMutualTLS runs the attacks of issue 13 against a real endpoint over gRPC with
// mutual TLS: each is refused with PermissionDenied (or fails its handshake), reaches nothing
// after authorize, and leaves the owner's connection working.
func TestAttacksOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := newMesh(t, "nsc-1", "nsc-2", "nse")
	rec := checks.NewServer()
	u := secureEndpoint(t, m, rec)

	owner, ownerMon := dialAs(t, u, m.hops["nsc-1"], tokensOf(t, m.hops["nsc-1"], 0))
	conn, err := owner.Request(ctx, fromClient("nsc-1", "a-1"))
	require.NoError(t, err)
	require.Equal(t, []string{"nsc-1", "nse"}, checks.PathNames(conn))
	atNSE := conn.GetPath().GetPathSegments()[1].GetId() // the connection's ID at the endpoint
	ownerStream, err := ownerMon.MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event, err := ownerStream.Recv()
	require.NoError(t, err)
	require.Contains(t, event.GetConnections(), atNSE, "the owner sees its connection")
	seen := event.GetConnections()[atNSE].GetPath().GetPathSegments()
	require.NotEmpty(t, seen[0].GetToken(), "with its own token")
	require.Empty(t, seen[1].GetToken(), "but not the endpoint's")

	other, otherMon := dialAs(t, u, m.hops["nsc-2"], tokensOf(t, m.hops["nsc-2"], 0))
	attacks := []struct {
		name string
		call func() error
		want string // part of the message
	}{
		{"another client refreshes the connection", func() error {
			_, err := other.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn.Clone(), MechanismPreferences: fromClient("", "").GetMechanismPreferences()})
			return err
		}, "policy owner: connection " + atNSE + " belongs to spiffe://mesh.test/nsc-1, not to spiffe://mesh.test/nsc-2"},
		{"another client closes the connection", func() error {
			_, err := other.Close(ctx, conn.Clone())
			return err
		}, "spiffe://mesh.test/nsc-2 may not close it"},
		{"a token signed by another key", func() error {
			forger, _ := dialAs(t, u, m.hops["nsc-2"], tokensOf(t, must(m.stranger.Source(idOf("nsc-2"), time.Hour)), 0))
			_, err := forger.Request(ctx, fromClient("nsc-2", "b-1"))
			return err
		}, "policy signed: segment 0 (nsc-2): the token cannot be trusted"},
		{"a token addressed to another hop", func() error {
			gen, err := spiffe.Tokens(m.hops["nsc-2"], time.Minute, token.WithAudience(idOf("nse-2").String()))
			require.NoError(t, err)
			misaddressed, _ := dialAs(t, u, m.hops["nsc-2"], gen)
			_, err = misaddressed.Request(ctx, fromClient("nsc-2", "b-2"))
			return err
		}, `policy chained: segment 0 (nsc-2): the token is addressed to {"spiffe://mesh.test/nse-2"}, not to the next hop spiffe://mesh.test/nse`},
		{"a token replayed after its expiry", func() error {
			replayer, _ := dialAs(t, u, m.hops["nsc-2"], tokensOf(t, m.hops["nsc-2"], -2*time.Minute))
			_, err := replayer.Request(ctx, fromClient("nsc-2", "b-3"))
			return err
		}, "policy tokens: segment 0 (nsc-2): the token expired"},
	}
	for _, a := range attacks {
		err := a.call()
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", a.name, err)
		require.Contains(t, status.Convert(err).Message(), a.want, a.name)
	}
	require.Len(t, rec.Requests(), 1, "no refused call reached the chain after authorize")
	require.Empty(t, rec.Closes())

	// A client of another trust domain does not get past the handshake.
	foreignCA := must(spiffe.NewCA(spiffeid.RequireTrustDomainFromString("other.test")))
	foreignSrc := must(foreignCA.Source(spiffeid.RequireFromString("spiffe://other.test/nsc"), time.Hour))
	foreign, _ := dialAs(t, u, foreignSrc, tokensOf(t, foreignSrc, 0))
	_, err = foreign.Request(ctx, fromClient("nsc", "c-1"))
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	// The other client's monitor shows nothing of the owner's.
	otherStream, err := otherMon.MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event, err = otherStream.Recv()
	require.NoError(t, err)
	require.Empty(t, event.GetConnections())

	// The owner's connection still works: a refresh, then its Close with an expired token.
	conn, err = owner.Request(ctx, &networkservice.NetworkServiceRequest{Connection: conn, MechanismPreferences: fromClient("", "").GetMechanismPreferences()})
	require.NoError(t, err)
	event, err = ownerStream.Recv()
	require.NoError(t, err)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, event.GetType(), "the refresh is the first event since the attacks")
	late, _ := dialAs(t, u, m.hops["nsc-1"], tokensOf(t, m.hops["nsc-1"], -2*time.Minute))
	_, err = late.Close(ctx, conn)
	require.NoError(t, err)
	event, err = ownerStream.Recv()
	require.NoError(t, err)
	require.Equal(t, networkservice.ConnectionEventType_DELETE, event.GetType())
	require.Len(t, rec.Requests(), 2)
	require.Len(t, rec.Closes(), 1)
}

// TestSecurePathThroughAHop runs the client chain, a hop that passes the Request on (an endpoint
// chain with connect, as a manager or a forwarder is) and an endpoint, each with an identity and
// mutual TLS: tokens made, sent, verified and chained by the real elements; the hop's monitor
// shows the client its connection with the path beyond, without other hops' tokens; another
// client cannot close it at the hop; the client's Close goes through.
func TestSecurePathThroughAHop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := newMesh(t, "nsc", "nsc-2", "mid", "nse")
	nseRec, midRec := checks.NewServer(), checks.NewServer()
	nseURL := secureEndpoint(t, m, nseRec)

	serveCtx, stop := context.WithCancel(context.Background())
	midGen := must(spiffe.Tokens(m.hops["mid"], time.Minute))
	mid := endpoint.NewServer(serveCtx, midGen, endpoint.WithName("mid"),
		endpoint.WithAuthorizeOptions(authorize.WithIdentity(m.hops["mid"])),
		endpoint.WithAdditionalFunctionality(midRec, connect.NewServer(client.NewClient(serveCtx,
			client.WithName("mid"), client.WithTokenGenerator(midGen), client.WithoutRetry(), client.WithClientURL(nseURL),
			client.WithDialOptions(dial.WithDialOptions(grpc.WithTransportCredentials(spiffe.ClientCredentials(m.hops["mid"]))))))))
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	midURL := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "mid.sock")}
	errs, err := endpoint.Serve(serveCtx, midURL, mid, grpc.Creds(spiffe.ServerCredentials(m.hops["mid"])))
	require.NoError(t, err)
	t.Cleanup(func() {
		stop()
		for range errs {
		}
		_ = os.RemoveAll(dir)
	})

	nscCtx, nscStop := context.WithCancel(ctx)
	defer nscStop()
	nsc := client.NewClient(nscCtx, client.WithName("nsc"), client.WithClientURL(midURL),
		client.WithTokenGenerator(must(spiffe.Tokens(m.hops["nsc"], time.Minute))),
		client.WithDialOptions(dial.WithDialOptions(grpc.WithTransportCredentials(spiffe.ClientCredentials(m.hops["nsc"])))))
	conn, err := nsc.Request(ctx, fromClient("nsc", "nsc-conn"))
	require.NoError(t, err)
	require.Equal(t, []string{"nsc", "mid", "nse"}, checks.PathNames(conn))

	// The hop's monitor, as the client sees it.
	_, nscMon := dialAs(t, midURL, m.hops["nsc"], tokensOf(t, m.hops["nsc"], 0))
	stream, err := nscMon.MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event, err := stream.Recv()
	require.NoError(t, err)
	atMid := conn.GetPath().GetPathSegments()[1].GetId()
	require.Contains(t, event.GetConnections(), atMid)
	seen := event.GetConnections()[atMid].GetPath().GetPathSegments()
	require.Len(t, seen, 3, "with the path beyond the hop")
	require.NotEmpty(t, seen[0].GetToken())
	require.Empty(t, seen[1].GetToken())
	require.Empty(t, seen[2].GetToken())

	other, _ := dialAs(t, midURL, m.hops["nsc-2"], tokensOf(t, m.hops["nsc-2"], 0))
	_, err = other.Close(ctx, conn.Clone())
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Empty(t, midRec.Closes())
	require.Empty(t, nseRec.Closes())

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Len(t, midRec.Closes(), 1)
	require.Len(t, nseRec.Closes(), 1)
}
