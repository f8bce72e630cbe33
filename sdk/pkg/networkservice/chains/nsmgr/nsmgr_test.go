package nsmgr_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
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

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const service = "icmp-responder"

func request(id string, labels map[string]string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: id, NetworkService: service, Labels: labels},
		MechanismPreferences: []*networkservice.Mechanism{
			{Cls: cls.LOCAL, Type: kernel.MECHANISM, Parameters: map[string]string{kernel.InterfaceNameKey: "nsm-1"}},
		},
	}
}

// endpoint starts an NSE of the service on node with labels, and returns what it sees.
func endpoint(node *sandbox.Node, name string, labels map[string]string) (*sandbox.Component, *checks.Recorder) {
	rec := checks.NewServer()
	c := node.NewEndpoint(&registry.NetworkServiceEndpoint{
		Name:                 name,
		NetworkServiceNames:  []string{service},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{service: {Labels: labels}},
	}, point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/16"), netip.MustParsePrefix("fd16::/64")), rec)
	return c, rec
}

func TestLocalRequestAndClose(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[0], "nse-1", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c-1", nil))
	require.NoError(t, err)
	require.Equal(t, []string{"nsc", "node-0-nsmgr", "node-0-fwd-0", "nse-1"}, checks.PathNames(conn))
	require.Equal(t, "nse-1", conn.GetNetworkServiceEndpointName())
	require.Len(t, conn.GetContext().GetIpContext().GetSrcIpAddrs(), 2, "an IPv4 and an IPv6 address for the client")
	require.Equal(t, networkservice.State_UP, conn.GetState())

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, rec.Open(), "the endpoint saw the Close")

	again, err := nsc.Request(ctx, request("c-2", nil))
	require.NoError(t, err)
	require.Equal(t, conn.GetContext().GetIpContext().GetSrcIpAddrs(), again.GetContext().GetIpContext().GetSrcIpAddrs(),
		"Close released the addresses at the endpoint")
	_, err = nsc.Close(ctx, again)
	require.NoError(t, err)
}

func TestRemoteRequest(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[1], "nse-remote", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c-1", nil))
	require.NoError(t, err)
	require.Equal(t, []string{"nsc", "node-0-nsmgr", "node-0-fwd-0", "node-1-nsmgr", "node-1-fwd-0", "nse-remote"}, checks.PathNames(conn))
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, rec.Open())
	require.Len(t, rec.Closes(), 1)
}

func TestNoEndpointSaysWhichService(t *testing.T) {
	mesh := sandbox.New(t, 1)
	nsc := mesh.Nodes[0].NewClient("nsc", client.WithoutRetry())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nsc.Request(ctx, request("c-1", nil))
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), service)
}

func TestSelectionByLabelsThroughMatches(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: service, Matches: []*registry.Match{
		{SourceSelector: map[string]string{"app": "firewall"}, Routes: []*registry.Destination{{DestinationSelector: map[string]string{"role": "gold"}}}, Fallthrough: true},
		{SourceSelector: map[string]string{"app": "firewall"}, Routes: []*registry.Destination{{DestinationSelector: map[string]string{"role": "silver"}}}},
		{Routes: []*registry.Destination{{DestinationSelector: map[string]string{"role": "bronze"}}}},
	}})
	_, silver := endpoint(mesh.Nodes[0], "nse-silver", map[string]string{"role": "silver"})
	_, bronze := endpoint(mesh.Nodes[0], "nse-bronze", map[string]string{"role": "bronze"})
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// No gold endpoint: the first match falls through to silver.
	conn, err := nsc.Request(ctx, request("fw", map[string]string{"app": "firewall"}))
	require.NoError(t, err)
	require.Equal(t, "nse-silver", conn.GetNetworkServiceEndpointName())
	require.Len(t, silver.Open(), 1)

	conn2, err := nsc.Request(ctx, request("web", map[string]string{"app": "web"}))
	require.NoError(t, err)
	require.Equal(t, "nse-bronze", conn2.GetNetworkServiceEndpointName())
	require.Len(t, bronze.Open(), 1)

	for _, c := range []*networkservice.Connection{conn, conn2} {
		_, err = nsc.Close(ctx, c)
		require.NoError(t, err)
	}
}

// The manager and the forwarder answer service lookups from a cache: a service registered
// again with other matches, or removed, must still reach their choices, through the cache's watch.
func TestServiceChangesReachDiscovery(t *testing.T) {
	mesh := sandbox.New(t, 1)
	to := func(role string) *registry.NetworkService {
		return &registry.NetworkService{Name: service, Matches: []*registry.Match{
			{Routes: []*registry.Destination{{DestinationSelector: map[string]string{"role": role}}}},
		}}
	}
	mesh.RegisterService(to("silver"))
	endpoint(mesh.Nodes[0], "nse-silver", map[string]string{"role": "silver"})
	endpoint(mesh.Nodes[0], "nse-bronze", map[string]string{"role": "bronze"})
	nsc := mesh.Nodes[0].NewClient("nsc", client.WithoutRetry())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	i := 0
	// chosen requests a new connection and closes it; it returns the endpoint that took it, or
	// the error's code.
	chosen := func() string {
		i++
		conn, err := nsc.Request(ctx, request(fmt.Sprintf("c-%d", i), nil))
		if err != nil {
			return status.Code(err).String()
		}
		_, err = nsc.Close(ctx, conn)
		require.NoError(t, err)
		return conn.GetNetworkServiceEndpointName()
	}

	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"as registered", func() {}, "nse-silver"},
		{"registered again with other matches", func() { mesh.RegisterService(to("bronze")) }, "nse-bronze"},
		{"removed", func() { mesh.UnregisterService(&registry.NetworkService{Name: service}) }, codes.NotFound.String()},
		{"registered anew", func() { mesh.RegisterService(to("silver")) }, "nse-silver"},
	}
	for _, step := range steps {
		step.change()
		require.Eventually(t, func() bool { return chosen() == step.want }, 5*time.Second, 10*time.Millisecond, step.name)
		require.Equal(t, step.want, chosen(), "%s: and it stays so", step.name)
	}
}

func TestForwarderSelectionByMatchMetadata(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.Nodes[0].NewForwarder("node-0-fwd-p2mp", map[string]string{"p2mp": "true"})
	mesh.RegisterService(&registry.NetworkService{Name: service, Matches: []*registry.Match{
		{Metadata: &registry.Metadata{Labels: map[string]string{"p2mp": "true"}}},
	}})
	endpoint(mesh.Nodes[0], "nse-1", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c", nil))
	require.NoError(t, err)
	require.Equal(t, "node-0-fwd-p2mp", checks.PathNames(conn)[2])
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

func TestManyClientsAtOnce(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[1], "nse-1", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	conns := make([]*networkservice.Connection, 100)
	errs := make([]error, 100)
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = nsc.Request(ctx, request(fmt.Sprintf("c-%d", i), nil)) })
	}
	wg.Wait()
	for i := range conns {
		require.NoError(t, errs[i], "client %d", i)
	}
	require.Len(t, rec.Open(), 100)
	for i, c := range conns {
		wg.Go(func() { _, errs[i] = nsc.Close(ctx, c) })
	}
	wg.Wait()
	for i := range conns {
		require.NoError(t, errs[i], "close %d", i)
	}
	require.Empty(t, rec.Open())
}

// healed waits until the endpoint rec has the connection id open again after a test broke it.
func healed(t *testing.T, rec *checks.Recorder, id string, before int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, r := range rec.Requests()[before:] {
			if r.GetConnection().GetPath().GetPathSegments()[0].GetId() == id {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond)
}

func TestEndpointDeathHealsToAnother(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	first, firstRec := endpoint(mesh.Nodes[0], "nse-a", nil)
	second, secondRec := endpoint(mesh.Nodes[0], "nse-b", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c", nil))
	require.NoError(t, err)

	victim, survivor := first, secondRec
	if conn.GetNetworkServiceEndpointName() == "nse-b" {
		victim, survivor = second, firstRec
	}
	before := len(survivor.Requests())
	start := time.Now()
	victim.Kill()
	healed(t, survivor, "c", before)
	t.Logf("healed to the other endpoint %v after the first died", time.Since(start))
	// Both endpoints draw from the same prefix: the client keeps its addresses, and the survivor
	// holds one connection however many hops healed (the nsmgr heals as well as the client).
	require.Eventually(t, func() bool {
		reqs := survivor.Requests()
		last := reqs[len(reqs)-1].GetConnection().GetContext().GetIpContext()
		return len(survivor.Open()) == 1 &&
			slices.Equal(last.GetSrcIpAddrs(), conn.GetContext().GetIpContext().GetSrcIpAddrs())
	}, 10*time.Second, 5*time.Millisecond, "the survivor holds the client's one connection, with its addresses")
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, survivor.Open(), "Close reached the endpoint that holds the connection")
}

// TestRestartHeals restarts each hop between the client and the endpoint in turn: the
// connection comes back through the new process by itself.
func TestRestartHeals(t *testing.T) {
	for _, tc := range []struct {
		hop   string
		which func(*sandbox.Node) *sandbox.Component
	}{
		{"forwarder", func(n *sandbox.Node) *sandbox.Component { return n.Forwarders[0] }},
		{"nsmgr", func(n *sandbox.Node) *sandbox.Component { return n.NSMgr }},
	} {
		t.Run(tc.hop, func(t *testing.T) {
			mesh := sandbox.New(t, 1)
			mesh.RegisterService(&registry.NetworkService{Name: service})
			_, rec := endpoint(mesh.Nodes[0], "nse-1", nil)
			nsc := mesh.Nodes[0].NewClient("nsc")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := nsc.Request(ctx, request("c", nil))
			require.NoError(t, err)

			before := len(rec.Requests())
			start := time.Now()
			tc.which(mesh.Nodes[0]).Restart()
			healed(t, rec, "c", before)
			t.Logf("healed through the restarted %s %v after the restart", tc.hop, time.Since(start))
			_, err = nsc.Close(ctx, conn)
			require.NoError(t, err)
		})
	}
}

func TestRefreshKeepsTheWholePathAcrossExpiries(t *testing.T) {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mesh := sandbox.New(t, 2, sandbox.WithClock(fake))
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[1], "nse-1", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(mesh.Context(), 30*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c", nil))
	require.NoError(t, err)

	// Four token lifetimes, a second at a time: at every moment the endpoint must hold a client
	// token that has not expired, which only refreshes crossing every hop can give it.
	for range 4 * int(sandbox.TokenLifetime/time.Second) {
		fake.Advance(time.Second)
		require.Eventually(t, func() bool {
			reqs := rec.Requests()
			expires := reqs[len(reqs)-1].GetConnection().GetPath().GetPathSegments()[0].GetExpires().AsTime()
			return expires.After(fake.Now())
		}, 10*time.Second, time.Millisecond, "at %v the endpoint holds an expired client token", fake.Now())
	}
	require.Greater(t, len(rec.Requests()), 4, "the endpoint was refreshed several times")
	require.Len(t, rec.Open(), 1, "the endpoint holds the connection")
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

func TestRegistryRestartBringsRegistrationsBack(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	endpoint(mesh.Nodes[1], "nse-1", nil)
	ctx, cancel := context.WithTimeout(mesh.Context(), 30*time.Second)
	defer cancel()
	require.Len(t, mesh.FindEndpoints(ctx, "nse-1"), 1)

	start := time.Now()
	mesh.Registry.Restart()
	require.Eventually(t, func() bool { return len(mesh.FindEndpoints(ctx, "nse-1")) == 1 }, 20*time.Second, 10*time.Millisecond,
		"the endpoint registered again by itself")
	t.Logf("the endpoint was registered again %v after the registry restarted", time.Since(start))

	mesh.RegisterService(&registry.NetworkService{Name: service}) // services are the operator's to register again
	nsc := mesh.Nodes[0].NewClient("nsc")
	conn, err := nsc.Request(ctx, request("c", nil))
	require.NoError(t, err)
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
}

func TestOnlyTheRegistrantMayUnregister(t *testing.T) {
	mesh := sandbox.New(t, 1)
	endpoint(mesh.Nodes[0], "nse-1", nil)
	ctx, cancel := context.WithTimeout(mesh.Context(), 10*time.Second)
	defer cancel()
	found := mesh.FindEndpoints(ctx, "nse-1")
	require.Len(t, found, 1)

	// path_ids prove nothing: the registry knows the registrant by its verified token.
	intruder := found[0].Clone()
	intruder.PathIds = []string{"nse-1"}
	err := mesh.UnregisterEndpoint(ctx, "someone-else", intruder)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "nse-1")
	require.Len(t, mesh.FindEndpoints(ctx, "nse-1"), 1, "still registered")

	require.NoError(t, mesh.UnregisterEndpoint(ctx, "nse-1", found[0]), "its registrant may")
	require.Empty(t, mesh.FindEndpoints(ctx, "nse-1"))
}
