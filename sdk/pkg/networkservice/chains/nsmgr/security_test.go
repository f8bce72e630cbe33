package nsmgr_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

// The attacks of a workload of the mesh's own trust domain on another's connection, through a
// secure mesh of real chains over gRPC with mutual TLS: each is refused, and the victim's
// connection is left as it was.

// secureMesh is a local mesh with one endpoint and a victim's connection through it.
func secureMesh(t *testing.T) (mesh *sandbox.Domain, victim networkservice.NetworkServiceClient, conn *networkservice.Connection, rec *checks.Recorder) {
	mesh = sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec = endpoint(mesh.Nodes[0], "nse-1", nil)
	victim = mesh.Nodes[0].NewClient("victim")
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	conn, err := victim.Request(ctx, request("victim-1", nil))
	require.NoError(t, err)
	return mesh, victim, conn, rec
}

func TestAnotherClientCannotCloseOrRefresh(t *testing.T) {
	mesh, victim, conn, rec := secureMesh(t)
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	mallory := networkservice.NewNetworkServiceClient(mesh.Dial(mesh.Nodes[0].NSMgr.URL, "mallory"))
	requests, closes := len(rec.Requests()), len(rec.Closes())

	_, err := mallory.Close(ctx, conn.Clone())
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	refresh := request("victim-1", nil)
	refresh.Connection = conn.Clone()
	_, err = mallory.Request(ctx, refresh)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Len(t, rec.Requests(), requests, "nothing reached the endpoint")
	require.Len(t, rec.Closes(), closes)

	// The victim's connection is as it was: its owner refreshes and closes it.
	refresh.Connection = conn.Clone()
	conn, err = victim.Request(ctx, refresh)
	require.NoError(t, err)
	_, err = victim.Close(ctx, conn)
	require.NoError(t, err)
	require.Len(t, rec.Closes(), closes+1)
}

// A stranger who learned the IDs of the victim's connection past the nsmgr (they show in an
// operator's vwctl output and in the forwarder's metrics) asks the nsmgr to close a connection
// with an ID of its own making: the nsmgr does not know it and passes the Close on, as it does for
// a client cleaning up after the nsmgr restarted, and the forwarder, which knows the connection,
// hears it from the nsmgr, one of its hops. It is refused there: the Close does not begin with
// the owner's token.
func TestAStrangerCannotCloseThroughAnIDOfItsOwn(t *testing.T) {
	mesh, victim, conn, rec := secureMesh(t)
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	mallory := networkservice.NewNetworkServiceClient(mesh.Dial(mesh.Nodes[0].NSMgr.URL, "mallory"))
	closes := len(rec.Closes())

	forged := conn.Clone()
	forged.Id = "mallory-1"
	segs := forged.GetPath().GetPathSegments()
	segs[0] = &networkservice.PathSegment{Name: "mallory", Id: "mallory-1"}
	segs[1].Id = "made-up" // an ID the nsmgr does not know
	for _, seg := range segs {
		seg.Token = ""
	}
	_, err := mallory.Close(ctx, forged)
	require.Error(t, err)
	require.Len(t, rec.Closes(), closes, "the victim's connection was not closed at the endpoint")

	// The victim's own first segment does not help without its token, which a stranger does not have.
	segs[0] = conn.GetPath().GetPathSegments()[0].Clone()
	segs[0].Token = ""
	_, err = mallory.Close(ctx, forged)
	require.Error(t, err)
	require.Len(t, rec.Closes(), closes)

	refresh := request("victim-1", nil)
	refresh.Connection = conn.Clone()
	conn, err = victim.Request(ctx, refresh)
	require.NoError(t, err)
	_, err = victim.Close(ctx, conn)
	require.NoError(t, err)
	require.Len(t, rec.Closes(), closes+1)
}

func TestAnotherClientDoesNotSeeTheConnection(t *testing.T) {
	mesh, _, conn, _ := secureMesh(t)
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	watch := func(as string) map[string]*networkservice.Connection {
		stream, err := networkservice.NewMonitorConnectionClient(mesh.Dial(mesh.Nodes[0].NSMgr.URL, as)).
			MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
		require.NoError(t, err)
		ev, err := stream.Recv()
		require.NoError(t, err)
		require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, ev.GetType())
		return ev.GetConnections()
	}
	require.Empty(t, watch("mallory"), "a stranger sees none of the victim's connections")
	require.Len(t, watch("operator"), 1, "an operator (NSM_MONITOR_OPERATORS) sees every connection")

	own := watch("victim")
	require.Len(t, own, 1, "the owner sees its connection")
	for _, seen := range own {
		require.Equal(t, checks.PathNames(conn), checks.PathNames(seen))
		for i, seg := range seen.GetPath().GetPathSegments() {
			if i > 0 {
				require.Empty(t, seg.GetToken(), "no other hop's token is handed out (segment %d)", i)
			}
		}
	}
}

func TestAForwarderCannotTakeAnothersName(t *testing.T) {
	mesh, victim, conn, _ := secureMesh(t)
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	impostor := registry.NewNetworkServiceEndpointRegistryClient(mesh.Dial(mesh.Nodes[0].NSMgr.URL, "impostor"))
	evil := &url.URL{Scheme: "unix", Path: "/tmp/vw-evil.sock"}
	_, err := impostor.Register(ctx, sandbox.ForwarderRecord(mesh.Nodes[0].Forwarders[0].Name, evil, map[string]string{"p2p": "true"}))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = impostor.Unregister(ctx, sandbox.ForwarderRecord(mesh.Nodes[0].Forwarders[0].Name, mesh.Nodes[0].Forwarders[0].URL, nil))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// The connection still goes through the real forwarder.
	refresh := request("victim-1", nil)
	refresh.Connection = conn.Clone()
	conn, err = victim.Request(ctx, refresh)
	require.NoError(t, err)
	require.Equal(t, mesh.Nodes[0].Forwarders[0].Name, checks.PathNames(conn)[2])
	_, err = victim.Close(ctx, conn)
	require.NoError(t, err)
}

func TestAClientWithoutAnIdentityCannotConnect(t *testing.T) {
	mesh := sandbox.New(t, 1)
	ctx, cancel := context.WithTimeout(mesh.Context(), 5*time.Second)
	defer cancel()
	cc, err := grpc.NewClient("unix://"+mesh.Nodes[0].NSMgr.URL.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	_, err = networkservice.NewNetworkServiceClient(cc).Request(ctx, request("anon", nil))
	require.Equal(t, codes.Unavailable, status.Code(err), "the TLS handshake fails: %v", err)
}
