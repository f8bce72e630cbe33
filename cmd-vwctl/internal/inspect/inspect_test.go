package inspect_test

import (
	"context"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/sandbox"

	"vwire.dev/cmd-vwctl/internal/inspect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "icmp-responder"

// connect starts an endpoint of the service on node nseNode and a client on node 0 with a
// connection to it, and returns the connection as the client got it, and the endpoint.
func connect(t *testing.T, mesh *sandbox.Domain, nseNode int) (*networkservice.Connection, *sandbox.Component) {
	t.Helper()
	mesh.RegisterService(&registry.NetworkService{Name: service})
	nse := mesh.Nodes[nseNode].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{service}},
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/16")))
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "c-1", NetworkService: service},
		MechanismPreferences: []*networkservice.Mechanism{
			{Cls: cls.LOCAL, Type: kernel.MECHANISM, Parameters: map[string]string{kernel.InterfaceNameKey: "nsm-1"}},
		},
	})
	require.NoError(t, err)
	return conn, nse
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConnectionsAsOperator(t *testing.T) {
	mesh := sandbox.New(t, 1)
	conn, _ := connect(t, mesh, 0)

	operator := inspect.New(mesh.Nodes[0].NSMgr.URL, nil, mesh.NewIdentity("operator").RegistryDialOptions()...)
	defer operator.Close()
	conns, err := operator.Connections(ctx(t))
	require.NoError(t, err)
	require.Len(t, conns, 1)
	c := conns[0]
	require.Equal(t, conn.GetPath().GetPathSegments()[1].GetId(), c.ID, "the nsmgr's own ID of the connection")
	require.Equal(t, "nsc", c.Client)
	require.Equal(t, service, c.Service)
	require.Equal(t, "nse", c.Endpoint)
	// (The sandbox's pass-through forwarders and endpoints choose no mechanism: the kernel
	// mechanism's fields are checked on the local mesh, integration-tests/vwctl_test.go.)
	require.Equal(t, conn.GetContext().GetIpContext().GetSrcIpAddrs(), c.ClientAddrs)
	require.Equal(t, conn.GetContext().GetIpContext().GetDstIpAddrs(), c.EndpointAddrs)
	require.Equal(t, "UP", c.State)
	require.Equal(t, []string{"nsc", "node-0-nsmgr", "node-0-fwd-0", "nse"}, c.Path)
	require.True(t, c.Expires.After(time.Now()), "the nsmgr's token expires later")

	// Anyone else of the trust domain, not an operator and not on the path, sees nothing.
	other := inspect.New(mesh.Nodes[0].NSMgr.URL, nil, mesh.NewIdentity("stranger").RegistryDialOptions()...)
	defer other.Close()
	conns, err = other.Connections(ctx(t))
	require.NoError(t, err)
	require.Empty(t, conns)
}

func TestRegistry(t *testing.T) {
	mesh := sandbox.New(t, 1)
	_, _ = connect(t, mesh, 0)
	in := inspect.New(mesh.Nodes[0].NSMgr.URL, nil, mesh.NewIdentity("operator").RegistryDialOptions()...)
	defer in.Close()

	nss, err := in.Services(ctx(t))
	require.NoError(t, err)
	require.Len(t, nss, 1)
	require.Equal(t, service, nss[0].GetName())

	nses, err := in.Endpoints(ctx(t))
	require.NoError(t, err)
	var names []string
	for _, nse := range nses {
		names = append(names, nse.GetName())
	}
	require.Equal(t, []string{"node-0-fwd-0", "nse"}, names, "the nsmgr's registry shows its node's forwarders, sorted by name")
}

func TestUnreachableNSMgr(t *testing.T) {
	u := &url.URL{Scheme: "unix", Path: "/nonexistent/vwctl-test.sock"}
	in := inspect.New(u, nil)
	defer in.Close()
	_, err := in.Connections(ctx(t))
	var unreachable *inspect.UnreachableError
	require.ErrorAs(t, err, &unreachable)
	require.Equal(t, "nsmgr", unreachable.What)
	require.Contains(t, err.Error(), u.String())
}

// In an insecure mesh every hop shows every connection whole, so a path is seen at each of
// its nsmgrs and forwarders (the sandbox's forwarders name no operator).
func TestPathAcrossNodes(t *testing.T) {
	mesh := sandbox.New(t, 2, sandbox.Insecure())
	conn, _ := connect(t, mesh, 1)
	in := inspect.New(mesh.Nodes[0].NSMgr.URL, nil, mesh.NewIdentity("vwctl").RegistryDialOptions()...)
	defer in.Close()

	segs := conn.GetPath().GetPathSegments()
	p, err := in.PathOf(ctx(t), segs[1].GetId())
	require.NoError(t, err)
	require.Equal(t, -1, p.Broken, "every hop holds it UP: %+v", p.Hops)
	var roles, states []string
	for _, h := range p.Hops {
		roles, states = append(roles, h.Role), append(states, h.State)
	}
	require.Equal(t, []string{"client", "nsmgr", "forwarder", "nsmgr", "forwarder", "endpoint"}, roles)
	require.Equal(t, []string{inspect.NotAsked, "UP", "UP", "UP", "UP", "UP"}, states)
	require.Equal(t, mesh.Nodes[1].NSMgr.URL.String(), p.Hops[3].URL, "the endpoint's nsmgr, from the endpoint's registration")
	require.Equal(t, segs[4].GetId(), p.Hops[4].View.ID, "the remote forwarder's own view")

	// Found by any hop's segment ID too.
	again, err := in.PathOf(ctx(t), segs[4].GetId())
	require.NoError(t, err)
	require.Equal(t, p.ID, again.ID)

	_, err = in.PathOf(ctx(t), "no-such-connection")
	require.ErrorIs(t, err, inspect.ErrNotFound)

	// The remote forwarder dies: the path breaks there, whatever the hops before it say.
	mesh.Nodes[1].Forwarders[0].Kill()
	p, err = in.PathOf(ctx(t), segs[1].GetId())
	require.NoError(t, err)
	require.Equal(t, 4, p.Broken, "%+v", p.Hops)
	require.Equal(t, "node-1-fwd-0", p.Hops[4].Name)
	require.Equal(t, inspect.Unreachable, p.Hops[4].State)
	require.NotEmpty(t, p.Hops[4].Error)
}

// An endpoint that died is where its path broke, though the hops before it report it DOWN.
func TestPathToADeadEndpoint(t *testing.T) {
	mesh := sandbox.New(t, 1, sandbox.Insecure())
	conn, nse := connect(t, mesh, 0)
	in := inspect.New(mesh.Nodes[0].NSMgr.URL, nil, mesh.NewIdentity("vwctl").RegistryDialOptions()...)
	defer in.Close()
	id := conn.GetPath().GetPathSegments()[1].GetId()

	p, err := in.PathOf(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, -1, p.Broken, "%+v", p.Hops)
	require.Equal(t, "UP", p.Hops[3].State, "the endpoint's own view")

	nse.Kill()
	p, err = in.PathOf(ctx(t), id)
	require.NoError(t, err)
	require.Equal(t, 3, p.Broken, "%+v", p.Hops)
	require.Equal(t, inspect.Unreachable, p.Hops[3].State)
}

// The identity vwctl runs as only sees: an operator (NSM_MONITOR_OPERATORS) that learned a
// connection whole from MonitorConnections can neither close nor refresh it, at the nsmgr or at
// the endpoint, whichever hop's ID it gives: every hop still holds it, and its client refreshes
// it unchanged.
func TestAnOperatorOnlySees(t *testing.T) {
	mesh := sandbox.New(t, 1)
	conn, nse := connect(t, mesh, 0)
	watch := func(u *url.URL) map[string]*networkservice.Connection {
		stream, err := networkservice.NewMonitorConnectionClient(mesh.Dial(u, "operator")).
			MonitorConnections(ctx(t), &networkservice.MonitorScopeSelector{})
		require.NoError(t, err)
		ev, err := stream.Recv()
		require.NoError(t, err)
		return ev.GetConnections()
	}
	hops := map[string]*url.URL{"nsmgr": mesh.Nodes[0].NSMgr.URL, "endpoint": nse.URL}
	held := map[string]*networkservice.Connection{}
	for name, u := range hops {
		seen := watch(u)
		require.Len(t, seen, 1, "the %s shows the operator the connection", name)
		operator := networkservice.NewNetworkServiceClient(mesh.Dial(u, "operator"))
		for _, view := range seen {
			held[name] = view
			_, err := operator.Close(ctx(t), view.Clone())
			require.Equal(t, codes.PermissionDenied, status.Code(err), "Close at the %s of its own ID: %v", name, err)
			asClient := view.Clone() // as its client sends it
			asClient.Id, asClient.Path.Index = conn.GetPath().GetPathSegments()[0].GetId(), 0
			// A hop lets through the Close of a connection it does not know (a restarted hop lets
			// its clients clean up): what it closes is nothing, as the end shows.
			_, err = operator.Close(ctx(t), asClient.Clone())
			require.Contains(t, []codes.Code{codes.OK, codes.PermissionDenied}, status.Code(err), "Close at the %s as the client: %v", name, err)
			_, err = operator.Request(ctx(t), &networkservice.NetworkServiceRequest{Connection: view.Clone()})
			require.Equal(t, codes.PermissionDenied, status.Code(err), "Request at the %s of its own ID: %v", name, err)
			// As the client, the operator is refused by the nsmgr (the connection is nsc's) and
			// may get from the endpoint only what any workload of the trust domain may: a
			// connection of its own, under a new ID and new addresses, which it may close.
			mine, err := operator.Request(ctx(t), &networkservice.NetworkServiceRequest{Connection: asClient.Clone()})
			if status.Code(err) != codes.PermissionDenied {
				require.NoError(t, err, "Request at the %s as the client", name)
				require.NotEqual(t, view.GetId(), mine.GetPath().GetPathSegments()[mine.GetPath().GetIndex()+1].GetId())
				require.NotEqual(t, view.GetContext().GetIpContext().GetSrcIpAddrs(), mine.GetContext().GetIpContext().GetSrcIpAddrs())
				_, err = operator.Close(ctx(t), mine)
				require.NoError(t, err)
			}
		}
	}
	for name, u := range hops {
		now := watch(u)
		require.Len(t, now, 1, "the %s still holds the connection", name)
		for id, c := range now {
			require.Equal(t, held[name].GetId(), id)
			require.Equal(t, networkservice.State_UP, c.GetState(), "at the %s", name)
			require.Equal(t, held[name].GetContext().GetIpContext().GetSrcIpAddrs(), c.GetContext().GetIpContext().GetSrcIpAddrs())
		}
	}
}
