package nsmgr_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/orphan"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

// gone is how long a test waits for the path to close a connection whose caller went away:
// the grace, and time for the Close to pass the hops on a loaded machine.
const gone = orphan.DefaultGrace + 10*time.Second

// TestClientGoneClosesItsConnection: a client that stops without closing (its process died:
// its transport to the nsmgr ends) has its connection closed at the endpoint after the grace,
// long before its token expires.
func TestClientGoneClosesItsConnection(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[0], "nse-1", nil)
	id := mesh.NewIdentity("nsc")
	alive, die := context.WithCancel(mesh.Context())
	defer die()
	nsc := client.NewClient(alive, client.WithName("nsc"), client.WithClientURL(mesh.Nodes[0].NSMgr.URL),
		client.WithTokenGenerator(id.Tokens), client.WithDialOptions(dial.WithDialOptions(id.DialOptions()...)))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nsc.Request(ctx, request("c-1", nil))
	require.NoError(t, err)
	require.Len(t, rec.Open(), 1)

	died := time.Now()
	die()
	require.Eventually(t, func() bool { return len(rec.Open()) == 0 }, gone, 10*time.Millisecond,
		"the endpoint still holds the connection of a client that went away")
	t.Logf("closed at the endpoint %s after the client went away (grace %s)", time.Since(died), orphan.DefaultGrace)
}

// TestForwarderGoneClosesRemoteHalf: the forwarder of the client's node dies for good; the
// endpoint's node learns it from the forwarder's transport and closes its half: the Close
// passes its forwarder and reaches the endpoint.
func TestForwarderGoneClosesRemoteHalf(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[1], "nse-remote", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nsc.Request(ctx, request("c-1", nil))
	require.NoError(t, err)
	require.Len(t, rec.Open(), 1)

	died := time.Now()
	mesh.Nodes[0].Forwarders[0].Kill()
	require.Eventually(t, func() bool { return len(rec.Open()) == 0 }, gone, 10*time.Millisecond,
		"the endpoint's node kept its half of a connection whose forwarder on the client's node is gone")
	t.Logf("closed at the remote endpoint %s after the forwarder died (grace %s)", time.Since(died), orphan.DefaultGrace)
}

// TestForwarderRestartKeepsRemoteHalf: a forwarder that restarts is asked again by its
// nsmgr's heal within the grace: the remote half stays, the endpoint sees no Close.
func TestForwarderRestartKeepsRemoteHalf(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service})
	_, rec := endpoint(mesh.Nodes[1], "nse-remote", nil)
	nsc := mesh.Nodes[0].NewClient("nsc")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nsc.Request(ctx, request("c-1", nil))
	require.NoError(t, err)
	requests := len(rec.Requests())

	mesh.Nodes[0].Forwarders[0].Restart()
	require.Eventually(t, func() bool { return len(rec.Requests()) > requests }, gone, 10*time.Millisecond,
		"the restarted forwarder was not asked again")
	require.Never(t, func() bool { return len(rec.Closes()) > 0 }, orphan.DefaultGrace+time.Second, 10*time.Millisecond,
		"the remote half was closed though its forwarder came back")
	require.Len(t, rec.Open(), 1)
}
