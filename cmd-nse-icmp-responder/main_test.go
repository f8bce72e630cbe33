package main

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"vwire.dev/sdk/pkg/networkservice/common/dial"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/fdpass"
)

var nseBin, registryBin string // built once

func TestMain(m *testing.M) {
	cmdtest.Main(m, map[string]*string{".": &nseBin, "vwire.dev/cmd-registry-memory": &registryBin})
}

func TestHelpAndREADMEListEveryVariable(t *testing.T) {
	cmdtest.CheckDocs(t, nseBin, &config{})
}

func TestBadConfigurationStopsWithOneLine(t *testing.T) {
	dir := cmdtest.TempDir(t)
	nowhere := "unix://" + filepath.Join(dir, "nobody.sock")
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		env  []string
		want string // the line, or its start when it ends with gRPC's words
	}{
		{"CIDR too long", []string{"NSM_CIDR_PREFIX=10.0.0.0/33"},
			`NSM_CIDR_PREFIX: "10.0.0.0/33": not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64`},
		{"second CIDR bad", []string{"NSM_CIDR_PREFIX=10.0.0.0/8,fd00::/129"},
			`NSM_CIDR_PREFIX: "10.0.0.0/8,fd00::/129": item 2 "fd00::/129": not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64`},
		{"no CIDR", []string{"NSM_CIDR_PREFIX="},
			`NSM_CIDR_PREFIX: "": no CIDR; give at least one, e.g. 169.254.0.0/16`},
		{"listen URL without scheme", []string{"NSM_LISTEN_ON=unix//x"},
			`NSM_LISTEN_ON: "unix//x": has no scheme; use unix:///path/to/socket or tcp://host:port`},
		{"listen URL without host", []string{"NSM_LISTEN_ON=tcp://:5003"},
			`NSM_LISTEN_ON: "tcp://:5003": has no host; use tcp://host:port, e.g. tcp://127.0.0.1:5001 or tcp://[::1]:5001`},
		{"connect URL of another scheme", []string{"NSM_CONNECT_TO=http://nsmgr:5001"},
			`NSM_CONNECT_TO: "http://nsmgr:5001": scheme "http" is not supported; use unix:///path/to/socket or tcp://host:port`},
		{"service name with a space", []string{"NSM_SERVICE_NAMES=icmp responder"},
			`NSM_SERVICE_NAMES: "icmp responder": name "icmp responder" has ' ' at byte 4; use letters, digits and '-', '_', '.' inside`},
		{"empty name", []string{"NSM_NAME="},
			`NSM_NAME: "": empty name`},
		{"label without value", []string{"NSM_LABELS=app"},
			`NSM_LABELS: "app": not key=value`},
		{"unknown payload", []string{"NSM_PAYLOAD=L2"},
			`NSM_PAYLOAD: "L2": want IP or ETHERNET`},
		{"unknown IPAM policy", []string{"NSM_IPAM_POLICY=strictest"},
			`NSM_IPAM_POLICY: "strictest": want polite or strict`},
		{"DNS configs not JSON", []string{"NSM_DNS_CONFIGS=8.8.8.8"},
			`NSM_DNS_CONFIGS: "8.8.8.8": not a JSON list (invalid character '.' after top-level value); write [{"dns_server_ips":["10.0.0.1"],"search_domains":["example.com"]}]`},
		{"DNS server not an IP", []string{`NSM_DNS_CONFIGS=[{"dns_server_ips":["10.0.0.1"]},{"dns_server_ips":["dns.example"]}]`},
			`NSM_DNS_CONFIGS: "[{\"dns_server_ips\":[\"10.0.0.1\"]},{\"dns_server_ips\":[\"dns.example\"]}]": item 2: dns_server_ips: "dns.example" is not an IP address`},
		{"DNS config field unknown", []string{`NSM_DNS_CONFIGS=[{"servers":["10.0.0.1"]}]`},
			`NSM_DNS_CONFIGS: "[{\"servers\":[\"10.0.0.1\"]}]": item 1: `},
		{"CIDR group not closed", []string{"NSM_CIDR_PREFIX=[10.0.0.0/24,fd00::/120],[10.1.0.0/24"},
			`NSM_CIDR_PREFIX: "[10.0.0.0/24,fd00::/120],[10.1.0.0/24": unbalanced brackets: '[' at byte 25 is not closed; groups do not nest`},
		{"empty CIDR group", []string{"NSM_CIDR_PREFIX=[10.0.0.0/24],[]"},
			`NSM_CIDR_PREFIX: "[10.0.0.0/24],[]": group 2 is empty; give it a CIDR or remove it`},
		{"CIDR group with host bits", []string{"NSM_CIDR_PREFIX=[10.0.0.0/24],[10.1.0.1/24]"},
			`NSM_CIDR_PREFIX: "[10.0.0.0/24],[10.1.0.1/24]": group 2 "10.1.0.1/24": has host bits set; did you mean 10.1.0.0/24?`},
		{"overlapping CIDR groups", []string{"NSM_CIDR_PREFIX=[10.0.0.0/16],[10.0.1.0/24]"},
			`NSM_CIDR_PREFIX: "[10.0.0.0/16],[10.0.1.0/24]": group 2: 10.0.1.0/24 overlaps 10.0.0.0/16 of group 1`},
		{"negative idle timeout", []string{"NSM_IDLE_TIMEOUT=-1s"}, `NSM_IDLE_TIMEOUT: "-1s": must be positive`},
		{"timeout without unit", []string{"NSM_REGISTER_TIMEOUT=15"},
			`NSM_REGISTER_TIMEOUT: "15": not a duration; write a number with a unit: 500ms, 30s, 5m, 1h30m`},
		{"zero token lifetime", []string{"NSM_MAX_TOKEN_LIFETIME=0s"},
			`NSM_MAX_TOKEN_LIFETIME: "0s": must be positive`},
		{"no registry on the socket", []string{"NSM_CONNECT_TO=" + nowhere},
			fmt.Sprintf("register network service icmp-responder at %s: no answer within NSM_REGISTER_TIMEOUT=%s; is the nsmgr or registry running there? (", nowhere, timeout)},
		{"no registry on the port", []string{"NSM_CONNECT_TO=tcp://127.0.0.1:1", "NSM_REGISTER_SERVICE=false"},
			fmt.Sprintf("register at tcp://127.0.0.1:1: no answer within NSM_REGISTER_TIMEOUT=%s; is the nsmgr or registry running there? (", timeout)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{
				"NSM_LOG_LEVEL=ERROR",
				"NSM_LISTEN_ON=unix://" + filepath.Join(dir, "nse.sock"),
				"NSM_REGISTER_TIMEOUT=" + timeout.String(),
			}, tc.env...)
			line, took := cmdtest.Fails(t, nseBin, env)
			require.Less(t, took, timeout+5*time.Second, "gave up within the timeout")
			require.True(t, strings.HasPrefix(line, "cmd-nse-icmp-responder: "+tc.want), "got %s", line)
		})
	}
}

// mesh is a registry and an endpoint registered there, each a process of its own.
type mesh struct {
	registry, nse *cmdtest.Process
	regURL        string
	nseURL        *url.URL
	regCC         *grpc.ClientConn
	watch         *watcher // of nse-1
}

// start starts the registry, watches it, starts the endpoint nse-1 with env, and waits until the
// endpoint registered; it returns the registration.
func start(t *testing.T, ctx context.Context, registryEnv, nseEnv []string) (*mesh, *registry.NetworkServiceEndpointResponse) {
	dir := cmdtest.TempDir(t)
	m := &mesh{
		regURL: "unix://" + filepath.Join(dir, "registry.sock"),
		nseURL: &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")},
	}
	m.registry, m.regCC = startRegistry(t, m.regURL, registryEnv...)
	m.watch = watch(t, ctx, m.regCC, "nse-1")
	m.nse = startNSE(t, "nse-1", m.regURL, m.nseURL.String(), nseEnv...)
	m.watch.nse = m.nse
	return m, m.watch.next()
}

func startRegistry(t *testing.T, u string, env ...string) (*cmdtest.Process, *grpc.ClientConn) {
	return cmdtest.Start(t, registryBin, append([]string{"NSM_LISTEN_ON=" + u}, env...)), cmdtest.Dial(t, u)
}

func startNSE(t *testing.T, name, registryURL, listen string, env ...string) *cmdtest.Process {
	return cmdtest.Start(t, nseBin, append([]string{
		"NSM_LOG_LEVEL=DEBUG",
		"NSM_NAME=" + name,
		"NSM_CONNECT_TO=" + registryURL,
		"NSM_PASS_SOCKET=false", // a registry, unlike an nsmgr, cannot dial a socket passed to it
		"NSM_LISTEN_ON=" + listen,
	}, env...))
}

// watcher follows the registration of one endpoint.
type watcher struct {
	t      *testing.T
	stream registry.NetworkServiceEndpointRegistry_FindClient
	nse    *cmdtest.Process // whose stderr explains a failure, once started
}

func watch(t *testing.T, ctx context.Context, cc *grpc.ClientConn, name string) *watcher {
	stream, err := registry.NewNetworkServiceEndpointRegistryClient(cc).Find(ctx, &registry.NetworkServiceEndpointQuery{
		NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{Name: name},
		Watch:                  true,
	}, grpc.WaitForReady(true))
	require.NoError(t, err)
	return &watcher{t: t, stream: stream}
}

// next returns the next change of the registration the registry tells.
func (w *watcher) next() *registry.NetworkServiceEndpointResponse {
	w.t.Helper()
	resp, err := w.stream.Recv()
	if err != nil && w.nse != nil {
		w.t.Fatalf("%v; endpoint stderr:\n%s", err, w.nse.Stderr())
	}
	require.NoError(w.t, err)
	return resp
}

func kernelRequest() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
	}
}

// TestEndToEndWithoutForwarder: the registry and the endpoint run as their binaries; a Go client
// requests from the endpoint directly (no nsmgr, no forwarder, so no interface is made).
func TestEndToEndWithoutForwarder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, reg := start(t, ctx, nil, []string{
		"NSM_CIDR_PREFIX=10.10.0.0/24,fd10::/120",
		"NSM_LABELS=app=icmp,version:2",
	})

	nse := reg.GetNetworkServiceEndpoint()
	require.False(t, reg.GetDeleted())
	require.Equal(t, m.nseURL.String(), nse.GetUrl())
	require.Equal(t, []string{"icmp-responder"}, nse.GetNetworkServiceNames())
	require.Equal(t, map[string]string{"app": "icmp", "version": "2"}, nse.GetNetworkServiceLabels()["icmp-responder"].GetLabels())
	require.Equal(t, []string{cmdtest.ID(t, "cmd/nse-1").String(), cmdtest.ID(t, "cmd").String()}, nse.GetPathIds(), "the verified path: the endpoint, then the registry")
	require.NotNil(t, nse.GetExpirationTime())

	services, err := registry.NewNetworkServiceRegistryClient(m.regCC).Find(ctx, &registry.NetworkServiceQuery{
		NetworkService: &registry.NetworkService{Name: "icmp-responder"},
	})
	require.NoError(t, err)
	ns, err := services.Recv()
	require.NoError(t, err)
	require.Equal(t, "IP", ns.GetNetworkService().GetPayload())

	monitor, err := networkservice.NewMonitorConnectionClient(cmdtest.DialAs(t, m.nseURL.String(), "nsc")).
		MonitorConnections(ctx, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	event := func(want networkservice.ConnectionEventType) map[string]*networkservice.Connection {
		ev, err := monitor.Recv()
		require.NoError(t, err)
		require.Equal(t, want, ev.GetType())
		return ev.GetConnections()
	}
	require.Empty(t, event(networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER))

	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(m.nseURL),
		client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
	conn, err := nsc.Request(ctx, kernelRequest())
	require.NoError(t, err, "endpoint stderr:\n%s", m.nse.Stderr())
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"10.10.0.2/32", "fd10::2/128"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.10.0.1/32", "fd10::1/128"}, ipc.GetDstIpAddrs())
	mech := kernel.ToMechanism(conn.GetMechanism())
	require.NotNil(t, mech)
	own, err := fdpass.PathURL(fmt.Sprintf("/proc/%d/ns/net", m.nse.Pid()))
	require.NoError(t, err)
	// The client chain's recvfd refuses an answer whose namespace did not come with it.
	require.Equal(t, own, mech.GetNetNSURL(), "the endpoint passes its own netns")
	require.Len(t, event(networkservice.ConnectionEventType_UPDATE), 1)

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Len(t, event(networkservice.ConnectionEventType_DELETE), 1)
	stopClient()

	require.Zero(t, m.nse.Stop())
	gone := m.watch.next()
	require.True(t, gone.GetDeleted(), "unregistered at exit")
	require.Equal(t, "nse-1", gone.GetNetworkServiceEndpoint().GetName())
	require.Contains(t, m.nse.Stderr(), "msg=registered")
	require.Contains(t, m.nse.Stderr(), "msg=stopped")
	_, err = monitor.Recv()
	require.Error(t, err, "the endpoint stopped serving")
	require.Zero(t, m.registry.Stop())
}

// TestNSMsVariables: the endpoint runs with the environment of NSM's own endpoint manifests
// (deployments-k8s apps/nse-kernel with the Kernel2IP2Kernel patch: no NSM_LISTEN_ON, a /31,
// labels as key:value, DNS configs, the strict IPAM policy), registers, and gives a client all of
// it: a client that brings an address of another endpoint gets only its own.
func TestNSMsVariables(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	regURL := "unix://" + filepath.Join(cmdtest.TempDir(t), "registry.sock")
	reg, regCC := startRegistry(t, regURL)
	w := watch(t, ctx, regCC, "nse-kernel-1")
	nse := cmdtest.Start(t, nseBin, []string{
		"NSM_NAME=nse-kernel-1",
		"NSM_LOG_LEVEL=TRACE",
		"NSM_CONNECT_TO=" + regURL,
		"NSM_PASS_SOCKET=false", // a registry, unlike an nsmgr, cannot dial a socket passed to it
		"NSM_CIDR_PREFIX=172.16.1.100/31",
		"NSM_SERVICE_NAMES=kernel2ip2kernel",
		"NSM_PAYLOAD=IP",
		"NSM_LABELS=app:gateway",
		`NSM_DNS_CONFIGS=[{"dns_server_ips": ["172.16.1.100"], "search_domains": ["my.coredns.service"]}]`,
		"NSM_REGISTRY_CLIENT_POLICIES=etc/nsm/opa/common/.*.rego",
		"NSM_IPAM_POLICY=strict",
	})
	w.nse = nse
	registered := w.next().GetNetworkServiceEndpoint()
	require.Equal(t, map[string]string{"app": "gateway"}, registered.GetNetworkServiceLabels()["kernel2ip2kernel"].GetLabels())
	u, err := url.Parse(registered.GetUrl())
	require.NoError(t, err)

	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(u),
		client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
	req := kernelRequest()
	req.Connection.NetworkService = "kernel2ip2kernel"
	req.Connection.Context = &networkservice.ConnectionContext{IpContext: &networkservice.IPContext{SrcIpAddrs: []string{"192.168.9.2/32"}}}
	conn, err := nsc.Request(ctx, req)
	require.NoError(t, err, "endpoint stderr:\n%s", nse.Stderr())
	require.Equal(t, []string{"172.16.1.101/32"}, conn.GetContext().GetIpContext().GetSrcIpAddrs())
	require.Equal(t, []string{"172.16.1.100/32"}, conn.GetContext().GetIpContext().GetDstIpAddrs())
	dns := conn.GetContext().GetDnsContext().GetConfigs()
	require.Len(t, dns, 1)
	require.Equal(t, []string{"172.16.1.100"}, dns[0].GetDnsServerIps())
	require.Equal(t, []string{"my.coredns.service"}, dns[0].GetSearchDomains())
	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	stopClient()

	for _, v := range []string{"NSM_REGISTRY_CLIENT_POLICIES"} {
		require.Contains(t, nse.Stderr(), `msg="accepted, not used yet" cmd=cmd-nse-icmp-responder variable=`+v+" why=")
	}
	require.Zero(t, nse.Stop())
	require.True(t, w.next().GetDeleted())
	require.Zero(t, reg.Stop())
}

// TestCIDRGroups: with NSM's CIDR groups, a client gets a link from each group, under either
// policy: the address it brings from elsewhere stays beside them (polite) or goes (strict).
func TestCIDRGroups(t *testing.T) {
	for _, tc := range []struct {
		policy string
		src    []string
	}{
		{"polite", []string{"192.168.9.2/32", "10.0.0.2/32", "10.1.0.2/32"}},
		{"strict", []string{"10.0.0.2/32", "10.1.0.2/32"}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
			defer cancel()
			m, reg := start(t, ctx, nil, []string{"NSM_CIDR_PREFIX=[10.0.0.0/24],[10.1.0.0/24]", "NSM_IPAM_POLICY=" + tc.policy})
			u, err := url.Parse(reg.GetNetworkServiceEndpoint().GetUrl())
			require.NoError(t, err)

			clientCtx, stopClient := context.WithCancel(ctx)
			defer stopClient()
			nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(u),
				client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
			req := kernelRequest()
			req.Connection.Context = &networkservice.ConnectionContext{IpContext: &networkservice.IPContext{SrcIpAddrs: []string{"192.168.9.2/32"}}}
			conn, err := nsc.Request(ctx, req)
			require.NoError(t, err, "endpoint stderr:\n%s", m.nse.Stderr())
			require.Equal(t, tc.src, conn.GetContext().GetIpContext().GetSrcIpAddrs())
			require.Equal(t, []string{"10.0.0.1/32", "10.1.0.1/32"}, conn.GetContext().GetIpContext().GetDstIpAddrs())
			_, err = nsc.Close(ctx, conn)
			require.NoError(t, err)
			stopClient()
			require.Zero(t, m.nse.Stop())
			require.True(t, m.watch.next().GetDeleted())
			require.Zero(t, m.registry.Stop())
		})
	}
}

// TestStopsWhenIdle: with NSM_IDLE_TIMEOUT (NSM's scale-from-zero example), an endpoint that
// had no connection for that long unregisters and exits 0.
func TestStopsWhenIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, _ := start(t, ctx, nil, []string{"NSM_IDLE_TIMEOUT=1s"})
	require.True(t, m.watch.next().GetDeleted(), "unregistered when idle")
	require.Zero(t, m.nse.Wait())
	require.Contains(t, m.nse.Stderr(), "no connection for NSM_IDLE_TIMEOUT; stopping")
	require.Zero(t, m.registry.Stop())
}

// FuzzDNSConfigs: any text gives DNS configurations or an error, never a panic, and what it
// gives builds the dnscontext element (which panics on a server that is not an IP address).
func FuzzDNSConfigs(f *testing.F) {
	for _, s := range []string{`[]`, `[{"dns_server_ips":["10.0.0.1"],"search_domains":["a.b"]}]`, `[{"dnsServerIps":["fd00::1"]}]`, `[null]`, `{}`, `[{"dns_server_ips":["x"]}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d dnsConfigs
		if d.Decode(s) == nil {
			dnscontext.NewServer(d...)
		}
	})
}

// TestRefreshOutlivesTheExpirePeriod: with a registry that gives a second, the endpoint
// registers again and again, and the registry never drops it.
func TestRefreshOutlivesTheExpirePeriod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	const period = time.Second
	m, first := start(t, ctx, []string{"NSM_EXPIRE_PERIOD=" + period.String()}, nil)
	expires := first.GetNetworkServiceEndpoint().GetExpirationTime().AsTime()
	for {
		resp := m.watch.next()
		require.False(t, resp.GetDeleted(), "expired while the endpoint runs")
		if now := resp.GetNetworkServiceEndpoint().GetExpirationTime().AsTime(); now.After(expires.Add(period)) {
			break // registered again after the first registration's expiry was due
		}
	}
	require.Zero(t, m.nse.Stop())
	require.True(t, m.watch.next().GetDeleted())
}

// TestRegistryGoneAtExit: an endpoint whose registry died exits 1, saying so.
func TestRegistryGoneAtExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, _ := start(t, ctx, nil, []string{"NSM_REGISTER_TIMEOUT=1s"})
	// The registry holds the registration before its answer reaches the endpoint: stopped in
	// between, it leaves the endpoint's first registration unanswered, which fails at start.
	m.nse.WaitStderr("msg=registered")
	require.Zero(t, m.registry.Stop())
	require.Equal(t, 1, m.nse.Stop())
	lines := strings.Split(strings.TrimSpace(m.nse.Stderr()), "\n")
	require.Contains(t, lines[len(lines)-1], "cmd-nse-icmp-responder: unregister at "+m.regURL+": Unavailable: ")
}

// TestRegistersAgainAfterRegistryRestart: a registry that restarts has lost the endpoint; the
// endpoint registers again as soon as it answers, well before its next refresh.
func TestRegistersAgainAfterRegistryRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, _ := start(t, ctx, []string{"NSM_EXPIRE_PERIOD=1h"}, nil) // the next refresh is 20 minutes away
	require.Zero(t, m.registry.Stop())

	_, cc := startRegistry(t, m.regURL)
	again := watch(t, ctx, cc, "nse-1")
	again.nse = m.nse
	resp := again.next()
	require.False(t, resp.GetDeleted())
	require.Equal(t, m.nseURL.String(), resp.GetNetworkServiceEndpoint().GetUrl())
	require.Zero(t, m.nse.Stop())
	require.True(t, again.next().GetDeleted())
}

// TestStartsBeforeItsRegistry: the endpoint waits for a registry that is not up yet.
func TestStartsBeforeItsRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	dir := cmdtest.TempDir(t)
	regURL := "unix://" + filepath.Join(dir, "registry.sock")
	nse := startNSE(t, "nse-1", regURL, "unix://"+filepath.Join(dir, "nse.sock"))
	nse.WaitStderr("msg=serving") // and trying to register

	_, cc := startRegistry(t, regURL)
	w := watch(t, ctx, cc, "nse-1")
	w.nse = nse
	require.False(t, w.next().GetDeleted())
	require.Zero(t, nse.Stop())
}

// TestTwoEndpointsOfOneService: the second endpoint of a service registers the service too
// (services have no owner) and itself; the service stays when it stops.
func TestTwoEndpointsOfOneService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdtest.WaitLimit)
	defer cancel()
	m, _ := start(t, ctx, nil, nil)
	second := watch(t, ctx, m.regCC, "nse-2")
	nse2 := startNSE(t, "nse-2", m.regURL, "unix://"+filepath.Join(cmdtest.TempDir(t), "nse.sock"))
	second.nse = nse2
	require.Equal(t, []string{"icmp-responder"}, second.next().GetNetworkServiceEndpoint().GetNetworkServiceNames())
	require.Zero(t, nse2.Stop())
	require.True(t, second.next().GetDeleted())

	services, err := registry.NewNetworkServiceRegistryClient(m.regCC).Find(ctx, &registry.NetworkServiceQuery{
		NetworkService: &registry.NetworkService{Name: "icmp-responder"},
	})
	require.NoError(t, err)
	ns, err := services.Recv()
	require.NoError(t, err, "the service stays registered")
	require.Equal(t, "icmp-responder", ns.GetNetworkService().GetName())
	require.Zero(t, m.nse.Stop())
}
