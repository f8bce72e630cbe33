package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	monitorserver "vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

var bin string // the command, built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &bin})
}

// clientCommand returns how to run the client so that it works in a network namespace of its own: at
// start it looks for vWires a previous run left under its interface names, and the host's
// interfaces are none of its business. Without root it runs in the test's namespace, where it
// could not remove anything.
func clientCommand(args ...string) (string, []string) {
	if os.Geteuid() != 0 {
		return bin, args
	}
	return "unshare", append([]string{"--net", bin}, args...)
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

// refuse fails every request for the network service "broken", as an endpoint that cannot serve
// it would, and the first flakyRefusals for "flaky", as one that cannot serve it yet.
type refuse struct {
	flaky atomic.Int32 // requests for flaky so far
}

const flakyRefusals = 2

func (r *refuse) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	switch req.GetConnection().GetNetworkService() {
	case "broken":
		return nil, status.Error(codes.FailedPrecondition, "test endpoint: broken is broken")
	case "flaky":
		if r.flaky.Add(1) <= flakyRefusals {
			return nil, status.Error(codes.FailedPrecondition, "test endpoint: flaky is not ready")
		}
	}
	return next.Server(ctx).Request(ctx, req)
}

func (*refuse) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// serveEndpoint serves, in the test's process, an endpoint that accepts KERNEL and gives
// addresses from 10.20.0.0/24 and fd20::/120; it stops when the test ends.
func serveEndpoint(t *testing.T) *url.URL {
	u := &url.URL{Scheme: "unix", Path: filepath.Join(cmdtest.TempDir(t), "nse.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	ep := endpoint.NewServer(ctx, cmdtest.Tokens(t, "nse", time.Hour),
		endpoint.WithName("nse"),
		endpoint.WithMonitorOptions(monitorserver.WithOperators(cmdtest.ID(t, "test"))), // watch sees every connection
		endpoint.WithAdditionalFunctionality(
			&refuse{},
			point2pointipam.NewServer(netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("fd20::/120")),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: next.NewNetworkServiceServer()}),
		))
	errs, err := endpoint.Serve(ctx, u, ep, cmdtest.ServerOptions(t, "nse")...)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	return u
}

// monitor follows the connections of the endpoint at u.
type monitor struct {
	t      *testing.T
	stream networkservice.MonitorConnection_MonitorConnectionsClient
}

func watch(t *testing.T, ctx context.Context, u *url.URL) *monitor {
	stream, err := networkservice.NewMonitorConnectionClient(cmdtest.Dial(t, u.String())).
		MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	m := &monitor{t: t, stream: stream}
	require.Empty(t, m.next(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER))
	return m
}

// next returns the connections of the next event, which must be of type want.
func (m *monitor) next(want networkservice.ConnectionEventType) map[string]*networkservice.Connection {
	m.t.Helper()
	ev, err := m.stream.Recv()
	require.NoError(m.t, err)
	require.Equal(m.t, want, ev.GetType())
	return ev.GetConnections()
}

// one returns the only connection of conns.
func one(t *testing.T, conns map[string]*networkservice.Connection) *networkservice.Connection {
	require.Len(t, conns, 1)
	for _, c := range conns {
		return c
	}
	return nil
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	nowhere := "unix://" + filepath.Join(cmdtest.TempDir(t), "nobody.sock")
	missing := filepath.Join(cmdtest.TempDir(t), "missing")
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		env  []string // NSM_NETWORK_SERVICES=kernel://icmp-responder unless env sets it
		want string   // the line, or its start when it ends with the error of the chain
	}{
		{"no network services", []string{"NSM_NETWORK_SERVICES"},
			"NSM_NETWORK_SERVICES: not set, nor NSM_NETWORK_SERVICES_FILE; set one: the network services to ask for, as client URLs, e.g. kernel://icmp-responder/nsm-1"},
		{"no file of network services", []string{"NSM_NETWORK_SERVICES_FILE=" + missing},
			"NSM_NETWORK_SERVICES_FILE: open " + missing + ": no such file or directory"},
		{"empty network services", []string{"NSM_NETWORK_SERVICES="},
			`NSM_NETWORK_SERVICES: "": no URL; give at least one, e.g. kernel://icmp-responder/nsm-1`},
		{"scheme that is no mechanism", []string{"NSM_NETWORK_SERVICES=tcp://icmp-responder/nsm-1"},
			`NSM_NETWORK_SERVICES: "tcp://icmp-responder/nsm-1": url scheme: `},
		{"unsupported mechanism", []string{"NSM_NETWORK_SERVICES=kernel://a/nsm-1,memif://icmp-responder"},
			`NSM_NETWORK_SERVICES: "kernel://a/nsm-1,memif://icmp-responder": item 2 "memif://icmp-responder": mechanism MEMIF is not supported by this client; use kernel://`},
		{"no network service", []string{"NSM_NETWORK_SERVICES=kernel:///nsm-1"},
			`NSM_NETWORK_SERVICES: "kernel:///nsm-1": url host: missing network service`},
		{"interface name too long", []string{"NSM_NETWORK_SERVICES=kernel://icmp-responder/a-very-long-ifname"},
			`NSM_NETWORK_SERVICES: "kernel://icmp-responder/a-very-long-ifname": url path: interface name "a-very-long-ifname" is 18 bytes, limit 15`},
		{"interface twice", []string{"NSM_NETWORK_SERVICES=kernel://a/nsm-2,kernel://b"},
			`NSM_NETWORK_SERVICES: "kernel://a/nsm-2,kernel://b": item 2 "kernel://b": interface nsm-2 is taken by another URL; give each its own: kernel://service/name`},
		{"bad label", []string{"NSM_LABELS=app"}, `NSM_LABELS: "app": not key=value`},
		{"bad nsmgr URL", []string{"NSM_CONNECT_TO=unix://nsm.io.sock"},
			`NSM_CONNECT_TO: "unix://nsm.io.sock": has host "nsm.io.sock"; a unix URL has three slashes: unix:///nsm.io.sock`},
		{"NSM's other mechanism", []string{"NSM_MECHANISM=vfio"},
			`NSM_MECHANISM: "vfio": this client asks for kernel interfaces only; use kernel`},
		{"zero dial timeout", []string{"NSM_DIAL_TIMEOUT=0s"}, `NSM_DIAL_TIMEOUT: "0s": must be positive`},
		{"request timeout without unit", []string{"NSM_REQUEST_TIMEOUT=15"},
			`NSM_REQUEST_TIMEOUT: "15": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{"no nsmgr", []string{"NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1", "NSM_CONNECT_TO=" + nowhere},
			fmt.Sprintf("request kernel://icmp-responder/nsm-1 through %s: no answer within NSM_REQUEST_TIMEOUT=%s: ", nowhere, timeout)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{
				"NSM_LOG_LEVEL=ERROR",
				"NSM_REQUEST_TIMEOUT=" + timeout.String(),
				"NSM_NETWORK_SERVICES=kernel://icmp-responder",
			}, tc.env...)
			if tc.env[0] == "NSM_NETWORK_SERVICES" { // not set at all
				env = env[:2]
			}
			cmd, args := clientCommand()
			line, took := cmdtest.Fails(t, cmd, env, args...)
			require.Less(t, took, timeout+5*time.Second, "gave up within the timeout")
			require.True(t, strings.HasPrefix(line, "cmd-nsc: "+tc.want), "got %s", line)
		})
	}
}

// TestConnectsKeepsAndCloses: the client asks an endpoint directly (no nsmgr, no forwarder) for
// two vWires, keeps them, and closes both at SIGTERM.
func TestConnectsKeepsAndCloses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)

	cmd, args := clientCommand()
	nsc := cmdtest.Start(t, cmd, []string{
		"NSM_NAME=nsc-1",
		"NSM_CONNECT_TO=" + u.String(),
		"NSM_NETWORK_SERVICES=kernel://icmp-responder/eth-web?app=web,kernel://icmp-responder",
		"NSM_LABELS=app=any,pod=nsc-1",
	}, args...)
	first := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	second := one(t, m.next(networkservice.ConnectionEventType_UPDATE))

	// The client names its namespace file:///proc/<pid>/ns/net and passes it as a descriptor:
	// the endpoint sees the inode URL.
	netns, err := fdpass.PathURL(fmt.Sprintf("/proc/%d/ns/net", nsc.Pid()))
	require.NoError(t, err)
	if os.Geteuid() == 0 {
		own, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", nsc.Pid()))
		require.NoError(t, err)
		host, err := os.Readlink("/proc/self/ns/net")
		require.NoError(t, err)
		require.NotEqual(t, host, own, "the client runs in a namespace of its own, not the test's")
	}
	for _, tc := range []struct {
		conn      *networkservice.Connection
		iface     string
		labels    map[string]string
		src, dst  []string
		clientSeg string
	}{
		{first, "eth-web", map[string]string{"app": "web", "pod": "nsc-1"},
			[]string{"10.20.0.2/32", "fd20::2/128"}, []string{"10.20.0.1/32", "fd20::1/128"}, "nsc-1"},
		{second, "nsm-2", map[string]string{"app": "any", "pod": "nsc-1"},
			[]string{"10.20.0.4/32", "fd20::4/128"}, []string{"10.20.0.3/32", "fd20::3/128"}, "nsc-1"},
	} {
		mech := kernel.ToMechanism(tc.conn.GetMechanism())
		require.NotNil(t, mech)
		require.Equal(t, tc.iface, mech.GetInterfaceName())
		require.Equal(t, netns, mech.GetNetNSURL(), "the client passes its own netns")
		require.Equal(t, tc.labels, tc.conn.GetLabels())
		require.Equal(t, tc.src, tc.conn.GetContext().GetIpContext().GetSrcIpAddrs())
		require.Equal(t, tc.dst, tc.conn.GetContext().GetIpContext().GetDstIpAddrs())
		require.Equal(t, tc.clientSeg, tc.conn.GetPath().GetPathSegments()[0].GetName())
	}
	nsc.WaitStderr(`msg=connected cmd=cmd-nsc service=kernel://icmp-responder/nsm-2 interface=nsm-2 src="[10.20.0.4/32 fd20::4/128]" dst="[10.20.0.3/32 fd20::3/128]"`)
	require.Contains(t, nsc.Stderr(), `service="kernel://icmp-responder/eth-web?app=web" interface=eth-web src="[10.20.0.2/32 fd20::2/128]"`)

	require.Zero(t, nsc.Stop())
	closed := map[string]bool{}
	for range 2 {
		for id := range m.next(networkservice.ConnectionEventType_DELETE) {
			closed[id] = true
		}
	}
	require.Equal(t, map[string]bool{first.GetId(): true, second.GetId(): true}, closed)
	require.Equal(t, 2, strings.Count(nsc.Stderr(), "msg=closed"))
}

// TestNSMsVariables: the client runs with the environment of NSM's own client manifests
// (deployments-k8s apps/nsc-kernel), a URL without a mechanism as NSM's README writes them, and
// says which variables it accepts without using them yet.
func TestNSMsVariables(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)

	cmd, args := clientCommand()
	nsc := cmdtest.Start(t, cmd, []string{
		"NSM_LOG_LEVEL=TRACE",
		"NSM_NAME=alpine-nsc",
		"NSM_CONNECT_TO=" + u.String(),
		"NSM_NETWORK_SERVICES=icmp-responder/nsm-1",
		"NSM_MECHANISM=kernel",
		"NSM_DIAL_TIMEOUT=5s",
		"NSM_LIVENESS_CHECK_ENABLED=false",
		"NSM_AWARENESS_GROUPS=[kernel://a,kernel://b]",
	}, args...)
	conn := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	require.Equal(t, "nsm-1", kernel.ToMechanism(conn.GetMechanism()).GetInterfaceName())
	require.Equal(t, "alpine-nsc", conn.GetPath().GetPathSegments()[0].GetName())
	nsc.WaitStderr("msg=connected cmd=cmd-nsc service=kernel://icmp-responder/nsm-1")
	for _, v := range []string{"NSM_LIVENESS_CHECK_ENABLED", "NSM_AWARENESS_GROUPS"} {
		require.Contains(t, nsc.Stderr(), `msg="accepted, not used yet" cmd=cmd-nsc variable=`+v+" why=")
	}
	require.NotContains(t, nsc.Stderr(), "ignoring a variable")
	require.Zero(t, nsc.Stop())
}

// TestFailedRequestClosesTheOthers: when the second service is refused, the first connection is
// closed before the client exits with the reason.
func TestFailedRequestClosesTheOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	u := serveEndpoint(t)
	m := watch(t, ctx, u)

	cmd, args := clientCommand()
	code, _, stderr := cmdtest.Run(t, cmd, []string{
		"NSM_CONNECT_TO=" + u.String(),
		"NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1,kernel://broken/nsm-2",
	}, args...)
	require.Equal(t, 1, code)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	require.Equal(t, fmt.Sprintf("cmd-nsc: request kernel://broken/nsm-2 through %s: FailedPrecondition: connect: next hop %s: test endpoint: broken is broken", u, u), lines[len(lines)-1])
	opened := one(t, m.next(networkservice.ConnectionEventType_UPDATE))
	require.Contains(t, m.next(networkservice.ConnectionEventType_DELETE), opened.GetId())
}

// FuzzServiceURLs: any text gives URLs or an error, never a panic, and every URL it gives is
// KERNEL with an interface name of its own.
func FuzzServiceURLs(f *testing.F) {
	for _, s := range []string{"kernel://icmp-responder/nsm-1?app=web", "kernel://a,kernel://b/nsm-1", "memif://x", ",", "kernel://vpn@corp.example", "vpn/if-vpn,kernel://a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var urls serviceURLs
		if urls.Decode(s) != nil {
			return
		}
		names := map[string]bool{}
		for _, u := range urls {
			require.Equal(t, kernel.MECHANISM, u.Mechanism)
			require.NotEmpty(t, u.Interface)
			require.False(t, names[u.Interface])
			names[u.Interface] = true
		}
	})
}
