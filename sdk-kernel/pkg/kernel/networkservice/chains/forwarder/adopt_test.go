package forwarder_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/chains/forwarder"
)

// TestARestartedForwarderAdoptsItsVWires builds a connection of each kind whose kernel state
// outlives its forwarder, stops that forwarder as a crash would (its in-memory state gone, its
// kernel objects left), starts a new one on the same namespace and socket, and sends the
// connection again, as the nsmgr's heal does. The new forwarder adopts what stands: the same
// interfaces (same indexes), tc filters, addresses and routes, no link down or deleted, no
// address or route removed in the client's namespace, and no ping lost while it restarts. What
// it adopted is out of ifname's leftovers: the grace sweep removes nothing of it.
func TestARestartedForwarderAdoptsItsVWires(t *testing.T) {
	underlay := []netip.Prefix{netip.MustParsePrefix("10.254.0.1/24"), netip.MustParsePrefix("10.254.0.2/24")}
	tests := []struct {
		name    string
		nodes   int
		payload string
		restart int  // the node whose forwarder restarts
		renamed bool // the new forwarder has a name of its own (a new pod), not its predecessor's
	}{
		{"kernel/ip", 1, payload.IP, 0, false},
		{"kernel/ethernet", 1, payload.Ethernet, 0, false},
		{"vxlan/the client's node", 2, payload.Ethernet, 0, false},
		{"vxlan/the endpoint's node", 2, payload.Ethernet, 1, false},
		{"vxlan/ip/the client's node", 2, payload.IP, 0, false},
		{"kernel/ip/a successor of another name", 1, payload.IP, 0, true},
		{"vxlan/the endpoint's node/a successor of another name", 2, payload.Ethernet, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ul []netip.Prefix
			if tt.nodes > 1 {
				ul = underlay
			}
			d, nodes := mesh(t, tt.nodes, ul, nil, forwarderOpts(tt.nodes)...)
			nsc, nse, nscURL := workloads(t, d, nodes[tt.nodes-1], tt.payload)
			ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
			defer cancel()
			client := nodes[0].NewClient("nsc")
			conn, err := client.Request(ctx, request(nscURL))
			require.NoError(t, err)
			pingAcross(t, nsc, nse, conn)

			r := nodes[tt.restart]
			made, indexes := nstest.Dump(t, r.ns), ours(t, r.ns)
			require.NotEmpty(t, indexes)
			flaps := watchFlaps(t, r.ns, nsc)
			dst := netip.MustParsePrefix(conn.GetContext().GetIpContext().GetDstIpAddrs()[0]).Addr()
			pinging := pingCount(t, nscURL, dst, 300, 10*time.Millisecond)

			r.crash()
			marked, err := ifname.Mark(r.ns) // as cmd-forwarder-kernel does at start
			require.NoError(t, err)
			require.Len(t, marked, len(indexes))
			if tt.renamed {
				r.successors++
			}
			startForwarder(t, d, r, r.url, r.opts)
			refresh := request(nscURL)
			refresh.Connection = conn.Clone()
			conn, err = client.Request(ctx, refresh)
			require.NoError(t, err, "the new forwarder serves the connection")

			sent, received := pinging()
			require.Equal(t, sent, received, "no ping lost while the forwarder restarted")
			require.Empty(t, flaps(), "nothing went down or away")
			require.Equal(t, indexes, ours(t, r.ns), "the same interfaces")
			require.Equal(t, made, nstest.Dump(t, r.ns), "with the same filters, addresses and routes")
			removed, err := ifname.SweepMarked(r.ns)
			require.NoError(t, err)
			require.Empty(t, removed, "the adopted interfaces are no leftovers")
			pingAcross(t, nsc, nse, conn)
			_, err = client.Close(ctx, conn)
			require.NoError(t, err)
		})
	}
}

// TestARestartedForwarderRebuildsWhatDiffers: a connection sent again to a restarted forwarder
// with the client in another namespace (what stands does not match) gets a new vWire there,
// and the old one is removed.
func TestARestartedForwarderRebuildsWhatDiffers(t *testing.T) {
	d, nodes := mesh(t, 1, nil, nil)
	nsc, nse, nscURL := workloads(t, d, nodes[0], payload.IP)
	ctx, cancel := context.WithTimeout(d.Context(), 30*time.Second)
	defer cancel()
	client := nodes[0].NewClient("nsc")
	conn, err := client.Request(ctx, request(nscURL))
	require.NoError(t, err)
	before := ours(t, nodes[0].ns)

	nodes[0].crash()
	startForwarder(t, d, nodes[0], nodes[0].url, nodes[0].opts)
	moved, movedName := nstest.New(t)
	refresh := request(nstest.URL(movedName))
	refresh.Connection = conn.Clone()
	refresh.Connection.Mechanism = refresh.GetMechanismPreferences()[0].Clone()
	conn, err = client.Request(ctx, refresh)
	require.NoError(t, err)

	after := ours(t, nodes[0].ns)
	end := ifname.Name(conn.GetPath().GetPathSegments()[2].GetId(), ifname.Client)
	require.Contains(t, after, end)
	require.NotEqual(t, before[end], after[end], "the client's vWire was made anew")
	_, err = nstest.Handle(t, nsc).LinkByName("nsm-1")
	require.Error(t, err, "the old vWire is gone from the old namespace")
	pingAcross(t, moved, nse, conn)
	_, err = client.Close(ctx, conn)
	require.NoError(t, err)
}

// forwarderOpts are the options of a mesh of n nodes whose tunnels are VXLAN.
func forwarderOpts(n int) []forwarder.Option {
	if n == 1 {
		return nil
	}
	return []forwarder.Option{forwarder.WithRemoteMechanisms(vxlan.MECHANISM)}
}

// ours returns the index of each interface of ns named by ifname's rule.
func ours(t *testing.T, ns netns.NsHandle) map[string]int {
	links, err := nstest.Handle(t, ns).LinkList()
	require.NoError(t, err)
	out := map[string]int{}
	for _, l := range links {
		if ifname.Ours(l.Attrs().Name) {
			out[l.Attrs().Name] = l.Attrs().Index
		}
	}
	return out
}

// watchFlaps watches the forwarder's namespace fwd and the workload namespaces until the test
// ends; the returned function lists what went down or away since: an interface deleted or not
// up, an address or a route removed, and in fwd any change of tc (a redirect made again drops
// the packets that arrive in between).
func watchFlaps(t *testing.T, fwd netns.NsHandle, workloads ...netns.NsHandle) func() []string {
	var mu sync.Mutex
	var seen []string
	note := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf(format, args...))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	for i, ns := range append([]netns.NsHandle{fwd}, workloads...) {
		links, addrs, routes := make(chan netlink.LinkUpdate), make(chan netlink.AddrUpdate), make(chan netlink.RouteUpdate)
		require.NoError(t, netlink.LinkSubscribeAt(ns, links, done))
		require.NoError(t, netlink.AddrSubscribeAt(ns, addrs, done))
		require.NoError(t, netlink.RouteSubscribeAt(ns, routes, done))
		wg.Add(3)
		go func() {
			defer wg.Done()
			for u := range links {
				if u.Header.Type == unix.RTM_DELLINK || u.Attrs().Flags&1 == 0 { // net.FlagUp
					note("namespace %d: link %s %v", i, u.Attrs().Name, u.Attrs().Flags)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for u := range addrs {
				if !u.NewAddr {
					note("namespace %d: address %s removed", i, u.LinkAddress.String())
				}
			}
		}()
		go func() {
			defer wg.Done()
			for u := range routes {
				if u.Type == unix.RTM_DELROUTE {
					note("namespace %d: route %s removed", i, u.Route.String())
				}
			}
		}()
	}
	tc, err := nl.SubscribeAt(fwd, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_TC)
	require.NoError(t, err)
	require.NoError(t, tc.SetReceiveTimeout(&unix.Timeval{Usec: 50_000}))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer tc.Close()
		for {
			select {
			case <-done:
				return
			default:
			}
			msgs, _, err := tc.Receive()
			if err != nil {
				continue // the timeout, to look at done again
			}
			for _, m := range msgs {
				note("forwarder's namespace: tc message %d (a qdisc or filter made, changed or deleted)", m.Header.Type)
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string{}, seen...)
	}
}

// pingCount starts ping in the namespace of nsURL (one ip netns made), count echo requests every
// interval to dst, and returns a function that waits for it to end and returns how many it sent
// and how many were answered.
func pingCount(t *testing.T, nsURL string, dst netip.Addr, count int, interval time.Duration) func() (sent, received int) {
	name := strings.TrimPrefix(nsURL, "file:///var/run/netns/")
	cmd := exec.Command("ip", "netns", "exec", name, "ping", "-n", "-q", "-c", fmt.Sprint(count),
		"-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", dst.String())
	var out strings.Builder
	cmd.Stdout = &out
	require.NoError(t, cmd.Start())
	var once sync.Once
	wait := func() { once.Do(func() { _ = cmd.Wait() }) }
	t.Cleanup(func() { _ = cmd.Process.Kill(); wait() })
	return func() (int, int) {
		wait()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
		require.NotNil(t, m, "ping's summary:\n%s", out.String())
		var sent, received int
		_, _ = fmt.Sscan(m[1], &sent)
		_, _ = fmt.Sscan(m[2], &received)
		return sent, received
	}
}
