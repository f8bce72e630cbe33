package integrationtests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/spiffe"

	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// TestMetricsOnTheLocalMesh brings the local mesh up with every process serving Prometheus
// (MESH_PROMETHEUS=1), scrapes them over their namespaces' loopback and checks what the mesh did:
// one live connection per topology at nsmgr-1, at forwarder-1 and at each endpoint; the
// registry's endpoints per service and each nsmgr's forwarder; then known calls and traffic:
// VWIRE_METRICS_CALLS (default 5) Requests for a service nobody offers and as many Closes of
// connections nsmgr-1 never made, counted by service and code, and as many pings across the k2k
// vWire, counted by forwarder-1 on the end facing the client: each echo request received, each
// reply sent, 98 bytes each.
func TestMetricsOnTheLocalMesh(t *testing.T) {
	t.Setenv("MESH_PROMETHEUS", "1")
	dir := upMesh(t)
	n := envInt(t, "VWIRE_METRICS_CALLS", 5, 1)
	at := metricsAddresses(t, dir)

	nsmgr1, fwd1 := scrape(t, at["nsmgr1"]), scrape(t, at["forwarder1"])
	for _, tp := range topologies {
		svc := is("nsm_network_service", tp.service)
		require.Equal(t, 1.0, nsmgr1.value(t, "vwire_networkservice_server_connections", is("vwire_hop", "nsmgr-1"), svc))
		require.Equal(t, 1.0, fwd1.value(t, "vwire_networkservice_server_connections", is("vwire_hop", "forwarder-1"), svc))
		require.GreaterOrEqual(t, nsmgr1.value(t, "vwire_networkservice_server_requests_total", is("vwire_hop", "nsmgr-1"), svc,
			is("rpc_grpc_status_code", "OK")), 1.0, "the client's Request of %s", tp.service)
		nse := "nse-" + tp.name
		require.Equal(t, 1.0, scrape(t, at[nse]).value(t, "vwire_networkservice_server_connections", is("vwire_hop", nse), svc))
	}
	reg := scrape(t, at["registry"])
	for _, tp := range topologies {
		want := 1.0
		if tp.name == "k2k" {
			want = 2 // and its spare, k2k-2
		}
		require.Equal(t, want, reg.value(t, "vwire_registry_endpoints", is("nsm_network_service", tp.service)))
	}
	require.GreaterOrEqual(t, reg.value(t, "vwire_registry_watches", is("vwire_registry_record", "nse")), 1.0,
		"the nsmgrs' caches watch the registry")
	for node := 1; node <= 3; node++ {
		require.Equal(t, 1.0, scrape(t, at[fmt.Sprintf("nsmgr%d", node)]).value(t, "vwire_registry_endpoints",
			is("nsm_network_service", "forwarder")), "nsmgr%d keeps its node's forwarder", node)
	}

	code := callNsmgr1(t, dir, n)
	nsmgr1 = scrape(t, at["nsmgr1"])
	none := is("nsm_network_service", "metrics-test-none")
	require.Equal(t, float64(n), nsmgr1.value(t, "vwire_networkservice_server_requests_total", is("vwire_hop", "nsmgr-1"), none,
		is("rpc_grpc_status_code", code)))
	require.Equal(t, float64(n), nsmgr1.value(t, "vwire_networkservice_server_request_duration_seconds_count",
		is("vwire_hop", "nsmgr-1"), none, is("rpc_grpc_status_code", code)))
	require.Equal(t, float64(n), nsmgr1.value(t, "vwire_networkservice_server_closes_total", is("vwire_hop", "nsmgr-1"), none,
		is("rpc_grpc_status_code", "NOT_FOUND")))

	// Pings only: no ARP (permanent neighbours both ways) and no IPv6 router solicitation.
	quiet(t, "vw-nsc-k2k", "vw-nse-k2k")
	counted := func(name, dir string) float64 {
		return scrape(t, at["forwarder1"]).value(t, name, is("nsm_network_service", "icmp-k2k"), is("vwire_link_end", "in"),
			is("network_io_direction", dir))
	}
	var before [4]float64
	require.Eventually(t, func() bool { // the vWire is silent: nothing but the pings will cross it
		now := [4]float64{counted("vwire_link_packets_total", "receive"), counted("vwire_link_packets_total", "transmit"),
			counted("vwire_link_io_bytes_total", "receive"), counted("vwire_link_io_bytes_total", "transmit")}
		still := now == before
		before = now
		return still
	}, 30*time.Second, time.Second)
	out, err := exec.Command("ip", "netns", "exec", "vw-nsc-k2k", "ping", "-n", "-q", "-c", fmt.Sprint(n), "-i", "0.2", "-W", "2",
		"172.16.1.1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), fmt.Sprintf("%d received", n))
	const frame = 14 + 20 + 8 + 56 // Ethernet, IPv4, ICMP echo, ping's default payload
	require.Equal(t, float64(n), counted("vwire_link_packets_total", "receive")-before[0], "echo requests from the client")
	require.Equal(t, float64(n), counted("vwire_link_packets_total", "transmit")-before[1], "echo replies to the client")
	require.Equal(t, float64(n*frame), counted("vwire_link_io_bytes_total", "receive")-before[2])
	require.Equal(t, float64(n*frame), counted("vwire_link_io_bytes_total", "transmit")-before[3])
	t.Logf("scraped %d processes; nsmgr-1 counted %d Requests for metrics-test-none as %s and %d Closes as NOT_FOUND; "+
		"forwarder-1's k2k end facing the client: %d pings, +%d packets and +%d bytes each way (%v before)",
		len(at), n, code, n, n, n, n*frame, before)

	// The k2k endpoint dies and the path heals to its spare, k2k-2: the hop of the path that
	// noticed (the client, nsmgr-1 or forwarder-1) counts the heal and, once healed, its duration.
	_, err = mesh(t, dir, "kill", "nse-k2k")
	require.NoError(t, err)
	k2k := is("nsm_network_service", "icmp-k2k")
	// Each hop may heal (and reselect, closing its old path downstream first): the path is whole
	// again once every heal that began has ended, the spare holds the connection and nsmgr-1 one.
	var heals, healed float64
	require.Eventually(t, func() bool {
		heals, healed = 0, 0
		for _, p := range []string{"nsc-k2k", "nsmgr1", "forwarder1"} {
			m := scrape(t, at[p])
			heals += m.total("vwire_heal_starts_total", k2k)
			healed += m.total("vwire_heal_duration_seconds_count", k2k)
		}
		return heals >= 1 && healed == heals &&
			scrape(t, at["nse-k2k-2"]).total("vwire_networkservice_server_connections", k2k) == 1 &&
			scrape(t, at["nsmgr1"]).total("vwire_networkservice_server_connections", is("vwire_hop", "nsmgr-1"), k2k) == 1
	}, time.Minute, 100*time.Millisecond, "the path of k2k healed to the spare endpoint")
	took := map[string]string{}
	for _, p := range []string{"nsc-k2k", "nsmgr1", "forwarder1"} {
		m := scrape(t, at[p])
		took[p] = fmt.Sprintf("%.3f s in %v", m.total("vwire_heal_duration_seconds_sum", k2k), m.total("vwire_heal_duration_seconds_count", k2k))
	}
	t.Logf("after nse-k2k was killed: %v heals begun and ended on the path of k2k; time healing per hop: %v", heals, took)
}

// callNsmgr1 sends nsmgr-1, as a workload of the mesh (an SVID of its trust domain, its tokens),
// n Requests for a service nobody offers and n Closes of connections it never made; it returns
// the code the Requests failed with, as the metrics name it.
func callNsmgr1(t *testing.T, dir string, n int) string {
	ca, err := spiffe.LoadCA(filepath.Join(dir, "ca"))
	require.NoError(t, err)
	src, err := ca.Source(spiffeid.RequireFromSegments(ca.TrustDomain(), "metrics-test"), time.Hour)
	require.NoError(t, err)
	tokens, err := spiffe.Tokens(src, 10*time.Minute)
	require.NoError(t, err)
	nsmgr1 := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "run", "nsmgr1.sock")}
	creds := grpc.WithTransportCredentials(spiffe.ClientCredentials(src))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	nsc := client.NewClient(ctx, client.WithName("metrics-test"), client.WithClientURL(nsmgr1), client.WithTokenGenerator(tokens),
		client.WithoutRetry(), client.WithoutHeal(), client.WithDialOptions(dial.WithDialOptions(creds)))
	var code string
	for i := range n {
		_, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{Id: fmt.Sprintf("metrics-test-%d", i), NetworkService: "metrics-test-none"},
			MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
		})
		require.Error(t, err, "no endpoint offers metrics-test-none")
		code = metrics.Code(err).Value.AsString()
	}
	cc, err := regclient.Dial(nsmgr1, creds, regclient.WithTokens(tokens))
	require.NoError(t, err)
	defer func() { _ = cc.Close() }()
	for i := range n {
		_, err := networkservice.NewNetworkServiceClient(cc).Close(ctx,
			&networkservice.Connection{Id: fmt.Sprintf("metrics-never-made-%d", i), NetworkService: "metrics-test-none"})
		require.Error(t, err)
	}
	return code
}

// quiet makes the vWire nsm-1 between a client's and an endpoint's namespaces carry nothing but
// what the test sends: each side's neighbour entry for the other becomes permanent (no ARP), and
// neither solicits routers.
func quiet(t *testing.T, nsc, nse string) {
	addrOf := func(ns string) (ip, mac, dev string) {
		out, err := exec.Command("ip", "-n", ns, "-4", "-o", "addr", "show").Output()
		require.NoError(t, err)
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && f[1] != "lo" {
				dev, ip = f[1], strings.Split(f[3], "/")[0]
			}
		}
		link, err := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).Output()
		require.NoError(t, err)
		f := strings.Fields(string(link))
		for i := range f {
			if f[i] == "link/ether" {
				mac = f[i+1]
			}
		}
		require.NotEmpty(t, mac, "the vWire in %s", ns)
		return ip, mac, dev
	}
	cIP, cMAC, cDev := addrOf(nsc)
	eIP, eMAC, eDev := addrOf(nse)
	for _, c := range [][]string{
		{"ip", "-n", nsc, "neigh", "replace", eIP, "lladdr", eMAC, "nud", "permanent", "dev", cDev},
		{"ip", "-n", nse, "neigh", "replace", cIP, "lladdr", cMAC, "nud", "permanent", "dev", eDev},
		{"ip", "netns", "exec", nsc, "sysctl", "-qw", "net.ipv6.conf." + cDev + ".router_solicitations=0"},
		{"ip", "netns", "exec", nse, "sysctl", "-qw", "net.ipv6.conf." + eDev + ".router_solicitations=0"},
	} {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", c, out)
	}
}

// metricsAt is where a process of the mesh serves its metrics: a namespace ("-": the host's)
// and an address on its loopback.
type metricsAt struct{ netns, addr string }

// metricsAddresses reads where mesh.sh put each process's metrics (run/NAME.metrics).
func metricsAddresses(t *testing.T, dir string) map[string]metricsAt {
	files, err := filepath.Glob(filepath.Join(dir, "run", "*.metrics"))
	require.NoError(t, err)
	at := map[string]metricsAt{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		fields := strings.Fields(string(b))
		require.Len(t, fields, 2, "%s: %q", f, b)
		at[strings.TrimSuffix(filepath.Base(f), ".metrics")] = metricsAt{netns: fields[0], addr: fields[1]}
	}
	require.NotEmpty(t, at, "mesh.sh wrote no run/*.metrics: MESH_PROMETHEUS not honoured")
	return at
}

// scraped is one scrape of a Prometheus endpoint.
type scraped map[string]*dto.MetricFamily

// label is one label a sample must carry.
type label struct{ name, value string }

func is(name, value string) label { return label{name, value} }

// value returns the value of the one sample of the family name that carries every label
// (a histogram's _count and _sum under those names), failing when there is not exactly one.
func (s scraped) value(t *testing.T, name string, labels ...label) float64 {
	t.Helper()
	found := s.samples(name, labels)
	require.Len(t, found, 1, "%s with %v: %d samples among %d families", name, labels, len(found), len(s))
	return found[0]
}

// total returns the sum of the samples of the family name that carry every label: 0 for a
// family the process has not recorded yet.
func (s scraped) total(name string, labels ...label) float64 {
	sum := 0.0
	for _, v := range s.samples(name, labels) {
		sum += v
	}
	return sum
}

// samples returns the values of the samples of the family name that carry every label.
func (s scraped) samples(name string, labels []label) []float64 {
	family, suffix := name, ""
	for _, sfx := range []string{"_count", "_sum"} {
		if f, ok := s[strings.TrimSuffix(name, sfx)]; ok && strings.HasSuffix(name, sfx) && f.GetType() == dto.MetricType_HISTOGRAM {
			family, suffix = strings.TrimSuffix(name, sfx), sfx
		}
	}
	var found []float64
	for _, m := range s[family].GetMetric() {
		if !carries(m, labels) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			found = append(found, m.GetCounter().GetValue())
		case m.GetGauge() != nil:
			found = append(found, m.GetGauge().GetValue())
		case suffix == "_count":
			found = append(found, float64(m.GetHistogram().GetSampleCount()))
		case suffix == "_sum":
			found = append(found, m.GetHistogram().GetSampleSum())
		}
	}
	return found
}

func carries(m *dto.Metric, labels []label) bool {
	for _, want := range labels {
		has := false
		for _, l := range m.GetLabel() {
			has = has || (l.GetName() == want.name && l.GetValue() == want.value)
		}
		if !has {
			return false
		}
	}
	return true
}

// scrape fetches http://ADDR/metrics over a connection made in the process's namespace.
func scrape(t *testing.T, at metricsAt) scraped {
	t.Helper()
	require.NotEmpty(t, at.addr, "no metrics address")
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if at.netns == "-" {
			return dialer.DialContext(ctx, network, addr)
		}
		ns, err := netns.GetFromName(at.netns)
		if err != nil {
			return nil, err
		}
		defer func() { _ = ns.Close() }()
		var conn net.Conn
		err = nsfile.Do(ns, func() (err error) { // the socket is made, and stays, in the namespace
			conn, err = dialer.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}}
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport, Timeout: 10 * time.Second}).Get("http://" + at.addr + "/metrics")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err)
	return families
}
