package integrationtests

import (
	"context"
	"fmt"
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
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// TestLimitsOnTheLocalMesh sends what issue 14 found accepted (10,000 mechanism preferences,
// 10,000 labels, a 1 MB label, 1,000 path segments, an endpoint without URL), and registrations
// over the bounds (an endpoint's labels, a forwarder's services), to nsmgr1's socket,
// as a workload of the mesh (an SVID of its trust domain, its tokens), while the k2k client
// pings through nsmgr1's node: each is refused with the bound's name, nsmgr1 stays up and
// serving, and no ping is lost beyond noise. VWIRE_LIMITS_ROUNDS sets how many times each is
// sent (default 5).
func TestLimitsOnTheLocalMesh(t *testing.T) {
	dir := upMesh(t)
	rounds := envInt(t, "VWIRE_LIMITS_ROUNDS", 5, 1)

	ca, err := spiffe.LoadCA(filepath.Join(dir, "ca"))
	require.NoError(t, err)
	src, err := ca.Source(spiffeid.RequireFromSegments(ca.TrustDomain(), "limits-test"), time.Hour)
	require.NoError(t, err)
	tokens, err := spiffe.Tokens(src, 10*time.Minute)
	require.NoError(t, err)
	nsmgr1 := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "run", "nsmgr1.sock")}
	cc, err := regclient.Dial(nsmgr1, grpc.WithTransportCredentials(spiffe.ClientCredentials(src)), regclient.WithTokens(tokens))
	require.NoError(t, err)
	defer func() { _ = cc.Close() }()
	pid, err := os.ReadFile(filepath.Join(dir, "run", "nsmgr1.pid"))
	require.NoError(t, err)

	before := rss(strings.TrimSpace(string(pid)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := networkservice.NewNetworkServiceClient(cc)
	nses := registry.NewNetworkServiceEndpointRegistryClient(cc)
	bigCall := grpc.MaxCallSendMsgSize(16 << 20) // this side sends it; nsmgr1 is the one to refuse
	request := func(change func(r *networkservice.NetworkServiceRequest)) func() error {
		return func() error {
			r := &networkservice.NetworkServiceRequest{
				Connection:           &networkservice.Connection{Id: "limits-test", NetworkService: "icmp-k2k"},
				MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
			}
			change(r)
			_, err := ns.Request(ctx, r, bigCall)
			return err
		}
	}
	labels := func(n, valueBytes int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = strings.Repeat("v", valueBytes)
		}
		return m
	}
	cases := []struct {
		name string
		call func() error
		code codes.Code
		says string
	}{
		{"10,000 mechanism preferences", request(func(r *networkservice.NetworkServiceRequest) {
			for range 10000 {
				r.MechanismPreferences = append(r.MechanismPreferences, &networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
			}
		}), codes.InvalidArgument, "mechanism_preferences: 10001 entries, over the limit MaxMechanismPreferences = 16"},
		{"10,000 labels", request(func(r *networkservice.NetworkServiceRequest) { r.Connection.Labels = labels(10000, 1) }),
			codes.InvalidArgument, "connection.labels: 10000 entries, over the limit MaxLabels = 64"},
		{"a 1 MB label", request(func(r *networkservice.NetworkServiceRequest) { r.Connection.Labels = labels(1, 1<<20) }),
			codes.ResourceExhausted, "grpc: received message larger than max ("},
		{"a 100 KB label", request(func(r *networkservice.NetworkServiceRequest) { r.Connection.Labels = labels(1, 100<<10) }),
			codes.InvalidArgument, "over the limit MaxLabelValueBytes = 1024"},
		{"1,000 path segments", request(func(r *networkservice.NetworkServiceRequest) {
			r.Connection.Id = "id-0"
			r.Connection.Path = &networkservice.Path{}
			for i := range 1000 {
				r.Connection.Path.PathSegments = append(r.Connection.Path.PathSegments,
					&networkservice.PathSegment{Name: fmt.Sprintf("hop-%d", i), Id: fmt.Sprintf("id-%d", i)})
			}
		}), codes.InvalidArgument, "connection.path.path_segments: 1000 entries, over the limit MaxPathSegments = 32"},
		{"an endpoint without URL", func() error {
			_, err := nses.Register(ctx, &registry.NetworkServiceEndpoint{Name: "limits-test", NetworkServiceNames: []string{"icmp-k2k"}})
			return err
		}, codes.InvalidArgument, "network_service_endpoint.url: empty"},
		{"an endpoint with 100 labels", func() error {
			_, err := nses.Register(ctx, &registry.NetworkServiceEndpoint{Name: "limits-test", NetworkServiceNames: []string{"icmp-k2k"},
				Url:                  "unix:///tmp/limits-test.sock",
				NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp-k2k": {Labels: labels(100, 1)}}}, bigCall)
			return err
		}, codes.InvalidArgument, `network_service_endpoint.network_service_labels["icmp-k2k"].labels: 100 entries, over the limit MaxLabels = 64`},
		{"a forwarder of 1,000 services", func() error {
			names := []string{"forwarder"}
			for i := range 1000 {
				names = append(names, fmt.Sprintf("svc-%d", i))
			}
			_, err := nses.Register(ctx, &registry.NetworkServiceEndpoint{Name: "limits-test-fwd", NetworkServiceNames: names,
				Url: "unix:///tmp/limits-test-fwd.sock"}, bigCall)
			return err
		}, codes.InvalidArgument, "network_service_endpoint.network_service_names: 1001 entries, over the limit MaxListItems = 256"},
		{"a Close of a connection nsmgr1 never made", func() error {
			_, err := ns.Close(ctx, &networkservice.Connection{Id: "never-made", NetworkService: "icmp-k2k"})
			return err
		}, codes.NotFound, `connection "never-made" is unknown here`},
	}

	out := pingDuring(t, func() {
		for range rounds {
			for _, tc := range cases {
				err := tc.call()
				require.Equal(t, tc.code, status.Code(err), "%s: %v", tc.name, err)
				require.Contains(t, status.Convert(err).Message(), tc.says, tc.name)
			}
		}
	})
	w := windowOf(pingReplies(out))
	t.Logf("%d rounds of %d over-limit calls to nsmgr1; the k2k client's ping: %d sent, %d lost; nsmgr1's memory: %s before, %s after",
		rounds, len(cases), w.sent, w.lost, before, rss(strings.TrimSpace(string(pid))))
	require.LessOrEqual(t, w.lost, 2, "no ping lost beyond noise")

	require.True(t, running(strings.TrimSpace(string(pid))), "nsmgr1 is the same process, still running")
	health, err := grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, health.GetStatus())
	_, err = mesh(t, dir, "check")
	require.NoError(t, err, "every client of the mesh still carries ping")
}

// rss returns a process's resident memory as /proc says it, for the log.
func rss(pid string) string {
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
