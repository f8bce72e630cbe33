package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

var bin, registryBin, nseBin string // built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{
		".":                                &bin,
		"vwire.dev/cmd-registry-memory":    &registryBin,
		"vwire.dev/cmd-nse-icmp-responder": &nseBin,
	})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, bin, &config{})
}

// TestBadConfigurationStopsWithOneLine: the cases of this command; a listen URL that cannot be
// served (a file, a socket in use) is grpcserve's, tested there and in cmd-registry-memory.
func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unix URL with two slashes", []string{"NSM_LISTEN_ON=unix://nsm.io.sock"}, nil,
			`NSM_LISTEN_ON: "unix://nsm.io.sock": has host "nsm.io.sock"; a unix URL has three slashes: unix:///nsm.io.sock`},
		{"every address, not advertised", []string{"NSM_LISTEN_ON=tcp://:5001"}, nil,
			"NSM_ADVERTISE_URL: not set, and NSM_LISTEN_ON's tcp://:5001 is every address of the node, which other hops cannot dial; set it to the node's URL, e.g. tcp://10.0.0.1:5001"},
		{"every IPv4 address, not advertised", []string{"NSM_LISTEN_ON=tcp://0.0.0.0:5001"}, nil,
			"NSM_ADVERTISE_URL: not set, and NSM_LISTEN_ON's tcp://0.0.0.0:5001 is every address of the node, which other hops cannot dial; set it to the node's URL, e.g. tcp://10.0.0.1:5001"},
		{"every IPv6 address, not advertised", []string{"NSM_LISTEN_ON=tcp://[::]:5001"}, nil,
			"NSM_ADVERTISE_URL: not set, and NSM_LISTEN_ON's tcp://[::]:5001 is every address of the node, which other hops cannot dial; set it to the node's URL, e.g. tcp://10.0.0.1:5001"},
		{"port picked at start", []string{"NSM_LISTEN_ON=tcp://127.0.0.1:0", "NSM_ADVERTISE_URL=tcp://127.0.0.1:5001"}, nil,
			`NSM_LISTEN_ON: "tcp://127.0.0.1:0": port "0" is not a port number 1-65535`},
		{"advertised URL without host", []string{"NSM_LISTEN_ON=tcp://:5001", "NSM_ADVERTISE_URL=tcp://:5001"}, nil,
			`NSM_ADVERTISE_URL: "tcp://:5001": has no host; use tcp://host:port, e.g. tcp://127.0.0.1:5001 or tcp://[::1]:5001`},
		{"registry URL of another scheme", []string{"NSM_REGISTRY_URL=http://registry:5002"}, nil,
			`NSM_REGISTRY_URL: "http://registry:5002": scheme "http" is not supported; use unix:///path/to/socket or tcp://host:port`},
		{"name with a space", []string{"NSM_NAME=node 1"}, nil,
			`NSM_NAME: "node 1": name "node 1" has ' ' at byte 4; use letters, digits and '-', '_', '.' inside`},
		{"zero token lifetime", []string{"NSM_MAX_TOKEN_LIFETIME=0s"}, nil,
			`NSM_MAX_TOKEN_LIFETIME: "0s": must be positive`},
		{"dial timeout without unit", []string{"NSM_DIAL_TIMEOUT=5"}, nil,
			`NSM_DIAL_TIMEOUT: "5": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{"a forwarder service of another name", []string{"NSM_FORWARDER_NETWORK_SERVICE_NAME=fwd"}, nil,
			`NSM_FORWARDER_NETWORK_SERVICE_NAME: "fwd": this manager finds forwarders under the network service forwarder only; leave it unset`},
		{"every address among others, not advertised", []string{"NSM_LISTEN_ON=unix:///tmp/vw-never/nsm.io.sock,tcp://:5001"}, nil,
			"NSM_ADVERTISE_URL: not set, and NSM_LISTEN_ON's tcp://:5001 is every address of the node, which other hops cannot dial; set it to the node's URL, e.g. tcp://10.0.0.1:5001"},
		{"an operator that is no SPIFFE ID", []string{"NSM_MONITOR_OPERATORS=spiffe://example.org/admin,admin"}, nil,
			`NSM_MONITOR_OPERATORS: "spiffe://example.org/admin,admin": item 2 "admin": not a SPIFFE ID (spiffe://trust-domain/path): scheme is missing or invalid`},
		{"no identity", []string{"NSM_IDENTITY_DIR=/nonexistent"}, nil,
			`NSM_IDENTITY_DIR: "/nonexistent": spiffe: identity files in /nonexistent (svid.pem, svid_key.pem, bundle.pem): stat /nonexistent/svid.pem: no such file or directory`},
		{"two identities", []string{"NSM_INSECURE=true", "SPIFFE_ENDPOINT_SOCKET=unix:///run/spire/sockets/agent.sock"}, nil,
			`SPIFFE_ENDPOINT_SOCKET: SPIFFE_ENDPOINT_SOCKET and NSM_INSECURE are set; each names where the identity comes from, so set one`},
		{"a policy that is no Rego", []string{"NSM_NETWORK_SERVICE_SERVER_POLICIES=/nonexistent/*.rego"}, nil,
			`NSM_NETWORK_SERVICE_SERVER_POLICIES: "/nonexistent/*.rego": authorize: policy files "/nonexistent/*.rego": none found`},
		{"an argument", nil, []string{"serve"},
			`unexpected argument "serve"; the command takes NSM_* environment variables only (see --help)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// ERROR: nothing but the error line, also when the error comes after start.
			line, _ := cmdtest.Fails(t, bin, append([]string{"NSM_LOG_LEVEL=ERROR", "NSM_NAME=nsmgr-1"}, tc.env...), tc.args...)
			require.Equal(t, "cmd-nsmgr: "+tc.want, line)
		})
	}
}

func TestDefaultsServeAndStop(t *testing.T) {
	listen := "unix://" + filepath.Join(cmdtest.TempDir(t), "nsm.sock")
	p := cmdtest.Start(t, bin, []string{"NSM_LISTEN_ON=" + listen})
	cmdtest.WaitServing(t, cmdtest.Dial(t, listen))
	host, err := os.Hostname()
	require.NoError(t, err)
	p.WaitStderr(fmt.Sprintf("msg=serving cmd=cmd-nsmgr name=%s spiffe_id=spiffe://cmdtest.vwire/cmd url=%s advertised=%s registry=\"in memory\"", host, listen, listen))
	require.Zero(t, p.Stop())
	require.Contains(t, p.Stderr(), "msg=stopped")
}

// freeTCP returns a tcp URL on a port of the loopback address that was free a moment ago.
func freeTCP(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = lis.Close() }()
	return "tcp://" + lis.Addr().String()
}

// TestNSMsVariables: the nsmgr runs with the environment of NSM's own manifest
// (deployments-k8s apps/nsmgr: a socket and a tcp address in one NSM_LISTEN_ON, the registry
// as host:port), serves on both, and registers its node's endpoints under the tcp one.
func TestNSMsVariables(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	registryURL, tcp := freeTCP(t), freeTCP(t)
	unix := "unix://" + filepath.Join(cmdtest.TempDir(t), "nsm.io.sock")
	reg := cmdtest.Start(t, registryBin, []string{"NSM_LISTEN_ON=" + registryURL})
	p := cmdtest.Start(t, bin, []string{
		"NSM_NAME=nsmgr-abcde",
		"NSM_LOG_LEVEL=TRACE",
		"NSM_PPROF_ENABLED=true",
		"NSM_PPROF_LISTEN_ON=localhost:6060",
		"NSM_REGISTRY_URL=" + strings.TrimPrefix(registryURL, "tcp://"),
		"NSM_LISTEN_ON=" + unix + "," + tcp,
		"NSM_FORWARDER_NETWORK_SERVICE_NAME=forwarder",
		"NSM_DIAL_TIMEOUT=750ms",
	})
	for _, u := range []string{unix, tcp} {
		cmdtest.WaitServing(t, cmdtest.Dial(t, u))
	}
	_, err := registry.NewNetworkServiceEndpointRegistryClient(cmdtest.Dial(t, unix)).Register(ctx, &registry.NetworkServiceEndpoint{
		Name: "nse-1", Url: "unix:///var/lib/nse-1.sock", NetworkServiceNames: []string{"icmp-responder"},
	})
	require.NoError(t, err, "nsmgr stderr:\n%s", p.Stderr())
	found, err := registry.NewNetworkServiceEndpointRegistryClient(cmdtest.Dial(t, registryURL)).Find(ctx,
		&registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{Name: "nse-1"}})
	require.NoError(t, err)
	resp, err := found.Recv()
	require.NoError(t, err)
	require.Equal(t, tcp, resp.GetNetworkServiceEndpoint().GetUrl(), "the first tcp URL is the one other nodes dial")
	for _, v := range []string{"NSM_PPROF_ENABLED", "NSM_PPROF_LISTEN_ON"} {
		require.Contains(t, p.Stderr(), `msg="accepted, not used yet" cmd=cmd-nsmgr variable=`+v+" why=")
	}
	require.Zero(t, p.Stop())
	require.Zero(t, reg.Stop())
}

// node is one node's mesh: the registry, the nsmgr and the endpoint as processes of their own,
// and a pass-through forwarder in the test's process.
type node struct {
	dir                   string
	registryURL, nsmgrURL string
	nseURL                *url.URL
	registry, nsmgr, nse  *cmdtest.Process
	regWatch              registry.NetworkServiceEndpointRegistry_FindClient
	nseEvents             networkservice.MonitorConnection_MonitorConnectionsClient
}

func (n *node) startNsmgr(t *testing.T) {
	n.nsmgr = cmdtest.Start(t, bin, []string{
		"NSM_LOG_LEVEL=DEBUG",
		"NSM_NAME=nsmgr-1",
		"NSM_LISTEN_ON=" + n.nsmgrURL,
		"NSM_REGISTRY_URL=" + n.registryURL,
	})
}

// serveForwarder serves, in the test's process, a pass-through forwarder registered with the
// nsmgr (and again after it restarts); it stops when the test ends.
func (n *node) serveForwarder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // also when the forwarder fails to start
	u := &url.URL{Scheme: "unix", Path: filepath.Join(n.dir, "fwd.sock")}
	// Dialed as the kernel forwarder dials its nsmgr: endpoint sockets passed by descriptor come
	// with the lookups' results.
	nsmgrURL, err := url.Parse(n.nsmgrURL)
	require.NoError(t, err)
	cc, err := regclient.Dial(nsmgrURL, cmdtest.RegistryDialOptions(t, "fwd-1")...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	gen := cmdtest.Tokens(t, "fwd-1", 10*time.Minute)
	errs, err := grpcserve.Serve(ctx, u, sandbox.PassThroughForwarder(ctx, "fwd-1", gen, cc, cmdtest.DialOptions(t, "fwd-1")),
		cmdtest.ServerOptions(t, "fwd-1")...)
	require.NoError(t, err)
	_, unregister, err := regclient.Register(ctx, cc, sandbox.ForwarderRecord("fwd-1", u, map[string]string{"p2p": "true"}), regclient.WithTimeout(cmdtest.WaitLimit))
	require.NoError(t, err)
	t.Cleanup(func() {
		stopping, stop := context.WithTimeout(context.Background(), time.Second)
		defer stop()
		_ = unregister(stopping) // the nsmgr may be gone
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
}

// nextRegistration returns the next change of nse-1's registration that the registry tells.
func (n *node) nextRegistration(t *testing.T) *registry.NetworkServiceEndpointResponse {
	t.Helper()
	resp, err := n.regWatch.Recv()
	require.NoError(t, err, "nsmgr stderr:\n%s\nendpoint stderr:\n%s", n.nsmgr.Stderr(), n.nse.Stderr())
	return resp
}

// nextEvent returns the next event the endpoint tells its monitors.
func (n *node) nextEvent(t *testing.T) *networkservice.ConnectionEvent {
	t.Helper()
	ev, err := n.nseEvents.Recv()
	require.NoError(t, err, "endpoint stderr:\n%s", n.nse.Stderr())
	return ev
}

// TestEndToEndThroughTheNsmgr: the registry, the nsmgr and the endpoint run as their binaries,
// a pass-through forwarder and a client in the test. The client's connection goes nsc -> nsmgr
// -> forwarder -> nse; it heals when the nsmgr restarts.
func TestEndToEndThroughTheNsmgr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*cmdtest.WaitLimit)
	defer cancel()
	dir := cmdtest.TempDir(t)
	n := &node{
		dir:         dir,
		registryURL: "unix://" + filepath.Join(dir, "registry.sock"),
		nsmgrURL:    "unix://" + filepath.Join(dir, "nsm.sock"),
		nseURL:      &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")},
	}
	n.registry = cmdtest.Start(t, registryBin, []string{"NSM_LISTEN_ON=" + n.registryURL})
	var err error
	n.regWatch, err = registry.NewNetworkServiceEndpointRegistryClient(cmdtest.Dial(t, n.registryURL)).Find(ctx,
		&registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{Name: "nse-1"}, Watch: true},
		grpc.WaitForReady(true))
	require.NoError(t, err)
	n.startNsmgr(t)
	n.serveForwarder(t)
	n.nse = cmdtest.Start(t, nseBin, []string{
		"NSM_LOG_LEVEL=DEBUG",
		"NSM_NAME=nse-1",
		"NSM_CONNECT_TO=" + n.nsmgrURL,
		"NSM_LISTEN_ON=" + n.nseURL.String(),
		"NSM_CIDR_PREFIX=10.30.0.0/24,fd30::/120",
	})

	reg := n.nextRegistration(t).GetNetworkServiceEndpoint()
	require.Equal(t, n.nsmgrURL, reg.GetUrl(), "other nodes reach the endpoint through the nsmgr")
	require.Equal(t, cmdtest.ID(t, "cmd/nse-1").String(), reg.GetPathIds()[0], "the endpoint is the registrant, by its verified SPIFFE ID")
	// Monitored as the client: a caller sees only the connections it takes part in.
	n.nseEvents, err = networkservice.NewMonitorConnectionClient(cmdtest.DialAs(t, n.nseURL.String(), "nsc")).
		MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	require.Equal(t, networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER, n.nextEvent(t).GetType())

	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(mustParse(t, n.nsmgrURL)),
		client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", 10*time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
	})
	require.NoError(t, err, "nsmgr stderr:\n%s", n.nsmgr.Stderr())
	require.Equal(t, []string{"nsc", "nsmgr-1", "fwd-1", "nse-1"}, checks.PathNames(conn))
	require.Equal(t, "nse-1", conn.GetNetworkServiceEndpointName())
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"10.30.0.2/32", "fd30::2/128"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.30.0.1/32", "fd30::1/128"}, ipc.GetDstIpAddrs())
	ev := n.nextEvent(t)
	require.Equal(t, networkservice.ConnectionEventType_UPDATE, ev.GetType())
	require.Len(t, ev.GetConnections(), 1)
	for _, seen := range ev.GetConnections() {
		require.Equal(t, checks.PathNames(conn), checks.PathNames(seen), "the endpoint sees the whole path")
	}

	// SIGTERM: the nsmgr stops serving and exits 0.
	require.Zero(t, n.nsmgr.Stop())
	require.Contains(t, n.nsmgr.Stderr(), "msg=stopped")

	// A new nsmgr on the same socket: the endpoint registers again, the client's connection heals
	// through it to the same endpoint.
	restarted := time.Now()
	n.startNsmgr(t)
	again := n.nextRegistration(t)
	require.False(t, again.GetDeleted())
	require.Equal(t, n.nsmgrURL, again.GetNetworkServiceEndpoint().GetUrl())
	t.Logf("the endpoint registered again %v after the nsmgr restarted", time.Since(restarted))
	for {
		ev := n.nextEvent(t)
		if ev.GetType() != networkservice.ConnectionEventType_UPDATE {
			continue
		}
		healed := false
		for _, seen := range ev.GetConnections() {
			healed = healed || (checks.PathNames(seen)[0] == "nsc" && seen.GetContext().GetIpContext().GetSrcIpAddrs()[0] == "10.30.0.2/32")
		}
		if healed {
			break
		}
	}
	t.Logf("the endpoint saw the connection again %v after the nsmgr restarted", time.Since(restarted))

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err, "nsmgr stderr:\n%s", n.nsmgr.Stderr())
	for n.nextEvent(t).GetType() != networkservice.ConnectionEventType_DELETE {
	}
	stopClient()
	require.Zero(t, n.nse.Stop())
	require.True(t, n.nextRegistration(t).GetDeleted(), "unregistered through the restarted nsmgr")
	require.Zero(t, n.nsmgr.Stop())
	require.Zero(t, n.registry.Stop())
}

func mustParse(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}
