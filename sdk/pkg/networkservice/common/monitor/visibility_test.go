package monitor_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

var td = spiffeid.RequireTrustDomainFromString("mesh.test")

func idOf(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/"+name) }

// tokenOf is a token naming hop name (the monitor reads whose it is, not who signed it: authorize
// has judged that).
func tokenOf(name string) string {
	tok, _, err := token.NewInsecure(time.Minute, token.WithName(idOf(name).String()))(nil)
	if err != nil {
		panic(err)
	}
	return tok
}

// owned is connection id at the manager, requested by client name: the path client, mgr, nse,
// each segment with its hop's token.
func owned(id, client string) *networkservice.NetworkServiceRequest {
	req := request(id, "ns")
	for i, hop := range []string{client, "mgr", "nse"} {
		req.GetConnection().GetPath().GetPathSegments()[i].Token = tokenOf(hop)
	}
	return req
}

// secureMesh serves [begin, metadata, mon] over mutual TLS as "mgr" and returns a function that
// dials it as a hop of the trust domain.
func secureMesh(t *testing.T, mon *monitor.Server) func(name string) (networkservice.NetworkServiceClient, networkservice.MonitorConnectionClient) {
	t.Helper()
	ca, err := spiffe.NewCA(td)
	require.NoError(t, err)
	source := func(name string) spiffe.Source {
		src, err := ca.Source(idOf(name), time.Hour)
		require.NoError(t, err)
		return src
	}
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "mgr.sock"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(spiffe.ServerCredentials(source("mgr"))))
	networkservice.RegisterNetworkServiceServer(srv, next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(), mon))
	networkservice.RegisterMonitorConnectionServer(srv, mon)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return func(name string) (networkservice.NetworkServiceClient, networkservice.MonitorConnectionClient) {
		cc, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(spiffe.ClientCredentials(source(name))))
		require.NoError(t, err)
		t.Cleanup(func() { _ = cc.Close() })
		return networkservice.NewNetworkServiceClient(cc), networkservice.NewMonitorConnectionClient(cc)
	}
}

// tokens returns the hop names whose tokens conn carries.
func tokens(conn *networkservice.Connection) []string {
	var names []string
	for _, seg := range conn.GetPath().GetPathSegments() {
		if seg.GetToken() != "" {
			names = append(names, seg.GetName())
		}
	}
	return names
}

// TestCallersSeeOnlyTheirConnections: two clients request a connection each at the manager over
// mutual TLS; each sees its own only, with its own token and no other, in the initial state and
// in the events that follow; an operator sees both without tokens; a stranger sees nothing.
func TestCallersSeeOnlyTheirConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := secureMesh(t, monitor.NewServer(ctx, monitor.WithOperators(idOf("admin"))))
	nsc1, mon1 := dial("nsc-1")
	nsc2, mon2 := dial("nsc-2")
	_, admin := dial("admin")
	_, stranger := dial("stranger")

	_, err := nsc1.Request(ctx, owned("a", "nsc-1"))
	require.NoError(t, err)
	_, err = nsc2.Request(ctx, owned("b", "nsc-2"))
	require.NoError(t, err)

	streams := map[string]networkservice.MonitorConnection_MonitorConnectionsClient{
		"nsc-1": subscribe(t, ctx, mon1, nil), "nsc-2": subscribe(t, ctx, mon2, nil),
		"admin": subscribe(t, ctx, admin, nil), "stranger": subscribe(t, ctx, stranger, nil),
	}
	want := map[string]map[string][]string{ // connection ID: hops whose tokens are shown
		"nsc-1":    {"a": {"client"}},
		"nsc-2":    {"b": {"client"}},
		"admin":    {"a": nil, "b": nil},
		"stranger": {},
	}
	for name, stream := range streams {
		kind, conns := recv(t, stream)
		require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, kind, name)
		got := map[string][]string{}
		for id, conn := range conns {
			got[id] = tokens(conn)
		}
		require.Equal(t, want[name], got, name)
	}

	// nsc-2's refresh reaches nsc-2 and the operator; nsc-1 learns only of its own Close next.
	_, err = nsc2.Request(ctx, owned("b", "nsc-2"))
	require.NoError(t, err)
	_, err = nsc1.Close(ctx, owned("a", "nsc-1").GetConnection())
	require.NoError(t, err)
	for name, wantIDs := range map[string][]string{"nsc-1": {"a"}, "nsc-2": {"b"}, "admin": {"b", "a"}} {
		for _, id := range wantIDs {
			_, conns := recv(t, streams[name])
			require.Equal(t, []string{id}, keys(conns), name)
		}
	}
}

// TestInsecureSubscribersSeeEverything: without TLS, the monitor is as it was before identities.
func TestInsecureSubscribersSeeEverything(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsc, mc := serve(t, monitor.NewServer(ctx))
	_, err := nsc.Request(ctx, owned("a", "nsc-1"))
	require.NoError(t, err)
	_, conns := recv(t, subscribe(t, ctx, mc, nil))
	require.Equal(t, []string{"client", "mgr", "nse"}, tokens(conns["a"]))
}
