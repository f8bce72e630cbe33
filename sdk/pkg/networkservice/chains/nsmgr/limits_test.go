package nsmgr_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

func manyLabels(n, valueBytes int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = strings.Repeat("v", valueBytes)
	}
	return m
}

func manyNames(n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("ns-%d", i)
	}
	return list
}

func manySegments(n int) *networkservice.Path {
	p := &networkservice.Path{}
	for i := range n {
		p.PathSegments = append(p.PathSegments, &networkservice.PathSegment{Name: fmt.Sprintf("hop-%d", i), Id: fmt.Sprintf("id-%d", i)})
	}
	return p
}

// bigCall lets the test's own side send a message over MaxMessageBytes, so that the server's
// bound is what refuses it.
var bigCall = grpc.MaxCallSendMsgSize(16 << 20)

// TestLimitsOverGRPC sends a Request, Close, registration or Find over each bound to an nsmgr
// (and a registration without URL to the registry itself) as a caller of the mesh would, and
// checks the code and message the caller gets; then that the nsmgr still serves, and that a
// connection made before still refreshes and closes.
func TestLimitsOverGRPC(t *testing.T) {
	mesh := sandbox.New(t, 1)
	mesh.RegisterService(&registry.NetworkService{Name: "svc"})
	mesh.Nodes[0].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"svc"}})
	ctx, cancel := context.WithTimeout(mesh.Context(), 30*time.Second)
	defer cancel()

	held := mesh.Nodes[0].NewClient("nsc-held")
	heldConn, err := held.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "held", NetworkService: "svc"},
	})
	require.NoError(t, err)

	nsmgrURL := mesh.Nodes[0].NSMgr.URL
	cc := mesh.Dial(nsmgrURL, "caller")
	ns := networkservice.NewNetworkServiceClient(cc)
	nses := registry.NewNetworkServiceEndpointRegistryClient(cc)
	services := registry.NewNetworkServiceRegistryClient(cc)
	registryNSEs := registry.NewNetworkServiceEndpointRegistryClient(mesh.Dial(mesh.Registry.URL, "caller"))

	request := func(change func(c *networkservice.Connection, r *networkservice.NetworkServiceRequest)) func() error {
		return func() error {
			r := &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "bad", NetworkService: "svc"},
				MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}}}
			change(r.Connection, r)
			_, err := ns.Request(ctx, r, bigCall)
			return err
		}
	}
	endpoint := func(change func(nse *registry.NetworkServiceEndpoint)) *registry.NetworkServiceEndpoint {
		nse := &registry.NetworkServiceEndpoint{Name: "nse-bad", NetworkServiceNames: []string{"svc"}, Url: "unix:///tmp/nse-bad.sock"}
		change(nse)
		return nse
	}
	register := func(change func(nse *registry.NetworkServiceEndpoint)) func() error {
		return func() error {
			_, err := nses.Register(ctx, endpoint(change), bigCall)
			return err
		}
	}
	long := func(n int) string { return strings.Repeat("a", n) }

	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string // the whole message, or its part after a field name
	}{
		{"mechanism preferences", request(func(_ *networkservice.Connection, r *networkservice.NetworkServiceRequest) {
			for range validate.MaxMechanismPreferences {
				r.MechanismPreferences = append(r.MechanismPreferences, &networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
			}
		}), codes.InvalidArgument, "mechanism_preferences: 17 entries, over the limit MaxMechanismPreferences = 16"},
		{"labels", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Labels = manyLabels(validate.MaxLabels+1, 1)
		}), codes.InvalidArgument, "connection.labels: 65 entries, over the limit MaxLabels = 64"},
		{"label value", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Labels = map[string]string{"app": long(validate.MaxLabelValueBytes + 1)}
		}), codes.InvalidArgument, `connection.labels["app"]: 1025 bytes, over the limit MaxLabelValueBytes = 1024`},
		{"label key", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Labels = map[string]string{long(validate.MaxLabelKeyBytes + 1): "x"}
		}), codes.InvalidArgument, "318 bytes in the key, over the limit MaxLabelKeyBytes = 317"},
		{"path", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Id, c.Path = "id-0", manySegments(validate.MaxPathSegments+1) // the caller's segment first, as updatepath wants
		}), codes.InvalidArgument, "connection.path.path_segments: 33 entries, over the limit MaxPathSegments = 32"},
		{"token", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Id, c.Path = "id-0", manySegments(1)
			c.Path.PathSegments[0].Token = long(validate.MaxTokenBytes + 1)
		}), codes.InvalidArgument, "connection.path.path_segments[0].token: 16385 bytes, over the limit MaxTokenBytes = 16384"},
		{"service name", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.NetworkService = long(validate.MaxNameBytes + 1)
		}), codes.InvalidArgument, "connection.network_service: name: 254 bytes before its domain, over the limit MaxNameBytes = 253"},
		{"connection id", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Id = long(validate.MaxIDBytes + 1)
		}), codes.InvalidArgument, "connection.id: 257 bytes, over the limit MaxIDBytes = 256"},
		{"interface name", request(func(_ *networkservice.Connection, r *networkservice.NetworkServiceRequest) {
			r.MechanismPreferences[0].Parameters = map[string]string{kernel.InterfaceNameKey: long(16)}
		}), codes.InvalidArgument, "is 16 bytes, limit 15"},
		{"message size", request(func(c *networkservice.Connection, _ *networkservice.NetworkServiceRequest) {
			c.Labels = map[string]string{"big": long(validate.MaxMessageBytes)}
		}), codes.ResourceExhausted, "grpc: received message larger than max ("},
		{"close over the path bound", func() error {
			_, err := ns.Close(ctx, &networkservice.Connection{Id: "id-0", NetworkService: "svc", Path: manySegments(validate.MaxPathSegments + 1)})
			return err
		}, codes.InvalidArgument, "connection.path.path_segments: 33 entries, over the limit MaxPathSegments = 32"},
		{"close of an unknown connection", func() error {
			_, err := ns.Close(ctx, &networkservice.Connection{Id: "never-made", NetworkService: "svc"})
			return err
		}, codes.NotFound, `connection "never-made" is unknown here: it was not requested through this hop, and nothing names a next hop for it; there is nothing to close`},
		{"endpoint without URL", register(func(nse *registry.NetworkServiceEndpoint) { nse.Url = "" }),
			codes.InvalidArgument, "network_service_endpoint.url: empty; an endpoint registers the URL it serves on, which callers dial"},
		{"endpoint without URL at the registry", func() error {
			_, err := registryNSEs.Register(ctx, endpoint(func(nse *registry.NetworkServiceEndpoint) { nse.Url = "" }))
			return err
		}, codes.InvalidArgument, "network_service_endpoint.url: empty; an endpoint registers the URL it serves on, which callers dial"},
		{"endpoint services", register(func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceNames = manyNames(validate.MaxListItems + 1)
		}),
			codes.InvalidArgument, "network_service_endpoint.network_service_names: 257 entries, over the limit MaxListItems = 256"},
		{"endpoint labels", register(func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceLabels = map[string]*registry.NetworkServiceLabels{"svc": {Labels: manyLabels(validate.MaxLabels+1, 1)}}
		}), codes.InvalidArgument, `network_service_endpoint.network_service_labels["svc"].labels: 65 entries, over the limit MaxLabels = 64`},
		{"endpoint name", register(func(nse *registry.NetworkServiceEndpoint) { nse.Name = long(validate.MaxNameBytes + 1) }),
			codes.InvalidArgument, "network_service_endpoint.name: name: 254 bytes before its domain, over the limit MaxNameBytes = 253"},
		{"endpoint record size", register(func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceNames = manyNames(validate.MaxListItems)
			nse.NetworkServiceLabels = map[string]*registry.NetworkServiceLabels{}
			for _, name := range nse.NetworkServiceNames {
				nse.NetworkServiceLabels[name] = &registry.NetworkServiceLabels{Labels: manyLabels(4, 256)}
			}
		}), codes.InvalidArgument, "bytes encoded, over the limit MaxRecordBytes = 65536"},
		{"forwarder labels", register(func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceNames = []string{"forwarder"}
			nse.NetworkServiceLabels = map[string]*registry.NetworkServiceLabels{"forwarder": {Labels: manyLabels(validate.MaxLabels+1, 1)}}
		}), codes.InvalidArgument, `network_service_endpoint.network_service_labels["forwarder"].labels: 65 entries, over the limit MaxLabels = 64`},
		{"service matches", func() error {
			_, err := services.Register(ctx, &registry.NetworkService{Name: "svc-bad", Matches: make([]*registry.Match, validate.MaxListItems+1)})
			return err
		}, codes.InvalidArgument, "network_service.matches: 257 entries, over the limit MaxListItems = 256"},
		{"monitor selector", func() error {
			stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(ctx,
				&networkservice.MonitorScopeSelector{PathSegments: manySegments(validate.MaxPathSegments + 1).GetPathSegments()})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.InvalidArgument, "monitor_scope_selector.path_segments: 33 entries, over the limit MaxPathSegments = 32"},
		{"find template size", func() error {
			stream, err := nses.Find(ctx, &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{
				NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"svc": {Labels: manyLabels(1, validate.MaxRecordBytes)}},
			}})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.InvalidArgument, "network_service_endpoint: 65561 bytes encoded, over the limit MaxRecordBytes = 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			msg := status.Convert(err).Message()
			require.Contains(t, msg, tc.msg)
			for _, internal := range []string{"clienturl", "dial:", "connect:", "rpc error"} {
				require.NotContains(t, msg, internal, "the caller is told about its request, not the chain's plumbing")
			}
		})
	}

	// The client chain sends it no more than once: its size never fits, retrying cannot help.
	_, err = mesh.Nodes[0].NewClient("nsc-big").Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "big", NetworkService: "svc", Labels: map[string]string{"big": long(validate.MaxMessageBytes)}},
	})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "trying to send message larger than max (")
	require.NotContains(t, status.Convert(err).Message(), "attempts", "not retried until the deadline")

	health, err := grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, grpc_health_v1.HealthCheckResponse_SERVING, health.GetStatus())
	stream, err := nses.Find(ctx, &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{Name: "nse-bad"}})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF, "no refused registration was kept")

	refreshed, err := held.Request(ctx, &networkservice.NetworkServiceRequest{Connection: heldConn})
	require.NoError(t, err, "a connection made before still refreshes")
	require.Equal(t, heldConn.GetId(), refreshed.GetId())
	_, err = held.Close(ctx, refreshed)
	require.NoError(t, err, "and closes")
}
