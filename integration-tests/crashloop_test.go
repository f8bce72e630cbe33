package integrationtests

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeadClientsAreCleaned: a client in a crash loop (kill -9, started again at once in its
// namespace) never piles up connections: each run closes along the path the connection its
// previous run left, so within seconds of the last restart its endpoint holds one vWire, with one
// address lease, and each node one tunnel for it, as before the loop. A client killed for good
// is noticed by its nsmgr (its transport ended): within seconds its endpoint holds no vWire and
// the endpoint's node no tunnel for it.
func TestDeadClientsAreCleaned(t *testing.T) {
	dir := upMesh(t)
	logOf := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, "run", name+".log"))
		require.NoError(t, err)
		return string(b)
	}

	// k2wg2k: the endpoint on node 2, a wireguard-go device per connection on nodes 1 and 2.
	const client = "nsc-k2wg2k"
	held := func() holding {
		return holding{links(t, "vw-nse-k2wg2k"), tunnels(t, "vw-node1"), tunnels(t, "vw-node2")}
	}
	before := held()
	require.Len(t, before.endpoint, 1, "the endpoint holds the client's vWire")
	n := envInt(t, "VWIRE_CRASH_RESTARTS", 20, 1) // the goal is 100
	for i := range n {
		_, err := mesh(t, dir, "restart", client)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return strings.Count(logOf(client), "msg=connected") == i+2 }, 30*time.Second, 10*time.Millisecond,
			"run %d of the client connected", i+2)
	}
	last := time.Now()
	oneConnection := func() bool {
		now := held()
		return len(now.endpoint) == 1 && maps.Equal(now.node1, before.node1) && maps.Equal(now.node2, before.node2)
	}
	if !assert.Eventually(t, oneConnection, 30*time.Second, 50*time.Millisecond) {
		t.Fatalf("after %d crash-restarts the endpoint and the nodes hold more than one connection's worth: before %+v, now %+v", n, before, held())
	}
	now := held()
	t.Logf("%d crash-restarts: one connection's worth left %s after the last run connected (endpoint %v, before %v); the client closed what its previous run left %d times",
		n, time.Since(last).Round(time.Millisecond), now.endpoint, before.endpoint, strings.Count(logOf(client), "closed the connection a previous run left"))
	require.Contains(t, logOf(client), "closed the connection a previous run left")
	require.True(t, pingOnce("vw-nsc-k2wg2k"), "the last run's vWire carries ping")

	// Runs that die before or while they connect leave connections no later run finds (no vWire
	// yet, or one the next run's Request raced): their nsmgr closes them after its grace.
	for range 5 {
		_, err := mesh(t, dir, "restart", client)
		require.NoError(t, err)
	}
	from := len(logOf(client))
	_, err := mesh(t, dir, "restart", client)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(logOf(client)[from:], "msg=connected") }, 30*time.Second, 10*time.Millisecond,
		"the run after the fast restarts connected")
	last = time.Now()
	if !assert.Eventually(t, oneConnection, 30*time.Second, 50*time.Millisecond) {
		t.Fatalf("after 6 fast crash-restarts the endpoint and the nodes hold more than one connection's worth: before %+v, now %+v", before, held())
	}
	t.Logf("6 crash-restarts without waiting: one connection's worth left %s after the last run connected", time.Since(last).Round(time.Millisecond))
	require.True(t, pingOnce("vw-nsc-k2wg2k"), "the last run's vWire carries ping")

	// k2vx2k: the endpoint on node 2, a VXLAN device per connection on nodes 1 and 2.
	vxlan := func(node string) int { return tunnels(t, node)["vxlan"] }
	node1, node2 := vxlan("vw-node1"), vxlan("vw-node2")
	require.Len(t, links(t, "vw-nse-k2vx2k"), 1, "the endpoint holds the client's vWire")
	_, err = mesh(t, dir, "kill", "nsc-k2vx2k")
	require.NoError(t, err)
	killed := time.Now()
	require.Eventually(t, func() bool {
		return len(links(t, "vw-nse-k2vx2k")) == 0 && len(links(t, "vw-nsc-k2vx2k")) == 0 &&
			vxlan("vw-node1") == node1-1 && vxlan("vw-node2") == node2-1
	}, 30*time.Second, 50*time.Millisecond, "the path closed the connection of a client killed for good")
	t.Logf("a client killed for good: its endpoint, its namespace and both nodes held nothing of it %s after", time.Since(killed).Round(time.Millisecond))

	// Forwarder 1, the forwarder of every client, killed for good: the other nodes learn it from
	// its transports to their nsmgrs and close their halves (the endpoints' vWires and leases,
	// the tunnels).
	remote := func() map[string]int {
		return map[string]int{"nse-k2wg2k": len(links(t, "vw-nse-k2wg2k")), "nse-k2vx2k-ip": len(links(t, "vw-nse-k2vx2k-ip")),
			"node2 tunnels": len(tunnels(t, "vw-node2")), "node3 tunnels": len(tunnels(t, "vw-node3"))}
	}
	require.NotZero(t, remote()["nse-k2wg2k"], "the k2wg2k endpoint holds its client's vWire")
	_, err = mesh(t, dir, "kill", "forwarder1")
	require.NoError(t, err)
	killed = time.Now()
	nothing := map[string]int{"nse-k2wg2k": 0, "nse-k2vx2k-ip": 0, "node2 tunnels": 0, "node3 tunnels": 0}
	if !assert.Eventually(t, func() bool { return maps.Equal(remote(), nothing) }, 30*time.Second, 50*time.Millisecond) {
		t.Fatalf("the other nodes kept their halves of the connections through a forwarder killed for good: %v", remote())
	}
	t.Logf("forwarder 1 killed for good: the endpoints and tunnels of nodes 2 and 3 held nothing of its connections %s after", time.Since(killed).Round(time.Millisecond))
}

// holding is what an endpoint (its interfaces and their IPv4 addresses) and the two nodes of a
// path (their tunnels) hold.
type holding struct {
	endpoint     map[string]string
	node1, node2 map[string]int
}
