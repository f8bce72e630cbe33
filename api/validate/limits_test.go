package validate_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/api/validate"
)

// requireLimit checks that err is the bound limit (of value max) refusing field, with seen in
// its message, an InvalidArgument also when wrapped.
func requireLimit(t *testing.T, err error, field, limit string, max, seen int) {
	t.Helper()
	requireField(t, field, err)
	require.Equal(t, codes.InvalidArgument, status.Code(fmt.Errorf("wrapped: %w", err)))
	var verr *validate.Error
	require.ErrorAs(t, err, &verr)
	require.Equal(t, limit, verr.Limit)
	require.Contains(t, err.Error(), fmt.Sprintf("%d ", seen), "the value seen")
	require.Contains(t, err.Error(), fmt.Sprintf("%s = %d", limit, max), "the constant and its value")
}

func labelsOf(n, keyBytes, valueBytes int) map[string]string {
	m := map[string]string{}
	for i := range n {
		key := fmt.Sprintf("k%d", i)
		if keyBytes > 0 {
			key = strings.Repeat("k", keyBytes)
		}
		m[key] = strings.Repeat("v", valueBytes)
	}
	return m
}

func segments(n int) []*networkservice.PathSegment {
	list := make([]*networkservice.PathSegment, n)
	for i := range list {
		list[i] = &networkservice.PathSegment{Name: "hop-" + strconv.Itoa(i), Id: strconv.Itoa(i)}
	}
	return list
}

// TestRequestLimits: every bound of a Request, one past it refused with its name, at it accepted.
func TestRequestLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name  string
		set   func(r *networkservice.NetworkServiceRequest, n int) // sets the bounded value to n (bytes or entries)
		field string
		limit string
		max   int
	}{
		{"mechanism preferences",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.MechanismPreferences = preferences(n)
			},
			"mechanism_preferences", "MaxMechanismPreferences", validate.MaxMechanismPreferences},
		{"connection id",
			func(r *networkservice.NetworkServiceRequest, n int) { r.Connection.Id = long(n) },
			"connection.id", "MaxIDBytes", validate.MaxIDBytes},
		{"service name",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.NetworkService = long(n)
			},
			"connection.network_service", "MaxNameBytes", validate.MaxNameBytes},
		{"service domain",
			func(r *networkservice.NetworkServiceRequest, n int) { r.Connection.NetworkService = "ns@" + domain(n) },
			"connection.network_service", "MaxNameBytes", validate.MaxNameBytes},
		{"endpoint name",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.NetworkServiceEndpointName = long(n)
			},
			"connection.network_service_endpoint_name", "MaxNameBytes", validate.MaxNameBytes},
		{"labels",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Labels = labelsOf(n, 0, 1)
			},
			"connection.labels", "MaxLabels", validate.MaxLabels},
		{"label key",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Labels = labelsOf(1, n, 1)
			},
			`connection.labels["` + strings.Repeat("k", 64) + `"]`, "MaxLabelKeyBytes", validate.MaxLabelKeyBytes},
		{"label value",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Labels = map[string]string{"app": long(n)}
			},
			`connection.labels["app"]`, "MaxLabelValueBytes", validate.MaxLabelValueBytes},
		{"extra context",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.ExtraContext = labelsOf(n, 0, 1)
			},
			"connection.context.extra_context", "MaxLabels", validate.MaxLabels},
		{"mechanism parameters",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Mechanism.Parameters = labelsOf(n, 0, 1)
			},
			"connection.mechanism.parameters", "MaxLabels", validate.MaxLabels},
		{"mechanism parameter value",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.MechanismPreferences = []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM,
					Parameters: map[string]string{"future": long(n)}}}
			},
			`mechanism_preferences[0].parameters["future"]`, "MaxParameterBytes", validate.MaxParameterBytes},
		{"path segments",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Path = &networkservice.Path{PathSegments: segments(n)}
			},
			"connection.path.path_segments", "MaxPathSegments", validate.MaxPathSegments},
		{"segment token",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Path.PathSegments[0].Token = long(n)
			},
			"connection.path.path_segments[0].token", "MaxTokenBytes", validate.MaxTokenBytes},
		{"segment id",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Path.PathSegments[1].Id = long(n)
			},
			"connection.path.path_segments[1].id", "MaxIDBytes", validate.MaxIDBytes},
		{"segment name",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Path.PathSegments[1].Name = long(n)
			},
			"connection.path.path_segments[1].name", "MaxNameBytes", validate.MaxNameBytes},
		{"segment metrics",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Path.PathSegments[1].Metrics = labelsOf(n, 0, 1)
			},
			"connection.path.path_segments[1].metrics", "MaxLabels", validate.MaxLabels},
		{"excluded prefixes",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.IpContext.ExcludedPrefixes = repeat("10.0.0.0/8", n)
			},
			"connection.context.ip_context.excluded_prefixes", "MaxListItems", validate.MaxListItems},
		{"routes",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.IpContext.DstRoutes = routes(n)
			},
			"connection.context.ip_context.dst_routes", "MaxListItems", validate.MaxListItems},
		{"policies",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.IpContext.Policies = make([]*networkservice.PolicyRoute, n)
			},
			"connection.context.ip_context.policies", "MaxListItems", validate.MaxListItems},
		{"dns configs",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.DnsContext = &networkservice.DNSContext{Configs: make([]*networkservice.DNSConfig, n)}
			},
			"connection.context.dns_context.configs", "MaxListItems", validate.MaxListItems},
		{"dns search domain",
			func(r *networkservice.NetworkServiceRequest, n int) {
				r.Connection.Context.DnsContext = &networkservice.DNSContext{Configs: []*networkservice.DNSConfig{{SearchDomains: []string{long(n)}}}}
			},
			"connection.context.dns_context.configs[0].search_domains[0]", "MaxNameBytes", validate.MaxNameBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &networkservice.NetworkServiceRequest{Connection: validConnection()}
			tt.set(r, tt.max)
			require.NoError(t, validate.Request(r), "at the bound")

			r = &networkservice.NetworkServiceRequest{Connection: validConnection()}
			tt.set(r, tt.max+1)
			requireLimit(t, validate.Request(r), tt.field, tt.limit, tt.max, tt.max+1)
		})
	}
}

// domain returns a domain name of n bytes (n > 192): three labels of 63 bytes and the rest.
func domain(n int) string {
	l63 := strings.Repeat("d", 63)
	return l63 + "." + l63 + "." + l63 + "." + strings.Repeat("d", n-3*64)
}

func preferences(n int) []*networkservice.Mechanism {
	list := make([]*networkservice.Mechanism, n)
	for i := range list {
		list[i] = &networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM}
	}
	return list
}

func repeat(s string, n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = s
	}
	return list
}

func routes(n int) []*networkservice.Route {
	list := make([]*networkservice.Route, n)
	for i := range list {
		list[i] = &networkservice.Route{Prefix: "10.0.0.0/8"}
	}
	return list
}

// TestConnectionLimits: Close's check refuses what is over a bound and passes what is
// malformed.
func TestConnectionLimits(t *testing.T) {
	require.NoError(t, validate.ConnectionLimits(nil))
	require.NoError(t, validate.ConnectionLimits(&networkservice.Connection{NetworkService: "not a name"}), "form is not looked at")
	c := validConnection()
	c.Path.PathSegments = segments(validate.MaxPathSegments + 1)
	requireLimit(t, validate.ConnectionLimits(c), "connection.path.path_segments", "MaxPathSegments", validate.MaxPathSegments, validate.MaxPathSegments+1)
	c = validConnection()
	c.Labels = labelsOf(validate.MaxLabels+1, 0, 0)
	requireLimit(t, validate.ConnectionLimits(c), "connection.labels", "MaxLabels", validate.MaxLabels, validate.MaxLabels+1)
	c = validConnection()
	c.Id = strings.Repeat("x", validate.MaxIDBytes+1)
	requireLimit(t, validate.ConnectionLimits(c), "connection.id", "MaxIDBytes", validate.MaxIDBytes, validate.MaxIDBytes+1)
}

// TestRecordLimits: every bound of the registry's records, one past it refused with its name.
func TestRecordLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	names := func(n int) []string {
		list := make([]string, n)
		for i := range list {
			list[i] = "ns-" + strconv.Itoa(i)
		}
		return list
	}
	nseTests := []struct {
		name         string
		over         func(nse *registry.NetworkServiceEndpoint)
		field, limit string
		max, seen    int
	}{
		{"name", func(nse *registry.NetworkServiceEndpoint) { nse.Name = long(validate.MaxNameBytes + 1) },
			"network_service_endpoint.name", "MaxNameBytes", validate.MaxNameBytes, validate.MaxNameBytes + 1},
		{"services", func(nse *registry.NetworkServiceEndpoint) { nse.NetworkServiceNames = names(validate.MaxListItems + 1) },
			"network_service_endpoint.network_service_names", "MaxListItems", validate.MaxListItems, validate.MaxListItems + 1},
		{"labels", func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceLabels["icmp-responder"].Labels = labelsOf(validate.MaxLabels+1, 0, 1)
		}, `network_service_endpoint.network_service_labels["icmp-responder"].labels`, "MaxLabels", validate.MaxLabels, validate.MaxLabels + 1},
		{"url", func(nse *registry.NetworkServiceEndpoint) { nse.Url = "unix:///" + long(validate.MaxURLBytes) },
			"network_service_endpoint.url", "MaxURLBytes", validate.MaxURLBytes, validate.MaxURLBytes + 8},
		{"path ids", func(nse *registry.NetworkServiceEndpoint) { nse.PathIds = names(validate.MaxPathSegments + 1) },
			"network_service_endpoint.path_ids", "MaxPathSegments", validate.MaxPathSegments, validate.MaxPathSegments + 1},
		{"path id", func(nse *registry.NetworkServiceEndpoint) { nse.PathIds = []string{long(validate.MaxIDBytes + 1)} },
			"network_service_endpoint.path_ids[0]", "MaxIDBytes", validate.MaxIDBytes, validate.MaxIDBytes + 1},
	}
	for _, tt := range nseTests {
		t.Run("endpoint "+tt.name, func(t *testing.T) {
			nse := validEndpoint()
			tt.over(nse)
			requireLimit(t, validate.NetworkServiceEndpoint(nse), tt.field, tt.limit, tt.max, tt.seen)
		})
	}

	t.Run("endpoint record size", func(t *testing.T) {
		nse := validEndpoint() // every part within its bound, the whole over MaxRecordBytes
		for i := range validate.MaxListItems {
			name := "ns-" + strconv.Itoa(i)
			nse.NetworkServiceNames = append(nse.NetworkServiceNames, name)
			nse.NetworkServiceLabels[name] = &registry.NetworkServiceLabels{Labels: labelsOf(4, 0, validate.MaxLabelValueBytes/4)}
		}
		err := validate.NetworkServiceEndpoint(nse)
		requireField(t, "network_service_endpoint", err)
		require.Contains(t, err.Error(), fmt.Sprintf("over the limit MaxRecordBytes = %d", validate.MaxRecordBytes))
		requireField(t, "network_service_endpoint",
			validate.NetworkServiceEndpointQuery(&registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: nse}))
	})

	nsTests := []struct {
		name         string
		over         func(ns *registry.NetworkService)
		field, limit string
		max          int
	}{
		{"matches", func(ns *registry.NetworkService) { ns.Matches = make([]*registry.Match, validate.MaxListItems+1) },
			"network_service.matches", "MaxListItems", validate.MaxListItems},
		{"routes", func(ns *registry.NetworkService) {
			ns.Matches[0].Routes = make([]*registry.Destination, validate.MaxListItems+1)
		},
			"network_service.matches[0].routes", "MaxListItems", validate.MaxListItems},
		{"source selector", func(ns *registry.NetworkService) { ns.Matches[0].SourceSelector = labelsOf(validate.MaxLabels+1, 0, 1) },
			"network_service.matches[0].source_selector", "MaxLabels", validate.MaxLabels},
		{"destination selector", func(ns *registry.NetworkService) {
			ns.Matches[0].Routes[0].DestinationSelector = labelsOf(validate.MaxLabels+1, 0, 1)
		}, "network_service.matches[0].routes[0].destination_selector", "MaxLabels", validate.MaxLabels},
		{"metadata", func(ns *registry.NetworkService) {
			ns.Matches[0].Metadata = &registry.Metadata{Labels: labelsOf(validate.MaxLabels+1, 0, 1)}
		}, "network_service.matches[0].metadata.labels", "MaxLabels", validate.MaxLabels},
		{"path ids", func(ns *registry.NetworkService) { ns.PathIds = names(validate.MaxPathSegments + 1) },
			"network_service.path_ids", "MaxPathSegments", validate.MaxPathSegments},
	}
	for _, tt := range nsTests {
		t.Run("service "+tt.name, func(t *testing.T) {
			ns := validNetworkService()
			tt.over(ns)
			requireLimit(t, validate.NetworkService(ns), tt.field, tt.limit, tt.max, tt.max+1)
		})
	}
}

// TestLongValuesAreNotEchoed: an error quotes at most the start of a huge value.
func TestLongValuesAreNotEchoed(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for _, err := range []error{
		validate.Request(&networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: huge}}),
		validate.Request(&networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "ns", Payload: huge}}),
		validate.Request(&networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "ns",
			Labels: map[string]string{huge: ""}}}),
		validate.MechanismPreference(&networkservice.Mechanism{Cls: huge}),
		validate.IPContext(&networkservice.IPContext{SrcIpAddrs: []string{huge}}),
		validate.NetworkServiceEndpoint(&registry.NetworkServiceEndpoint{Name: "nse", Url: huge}),
	} {
		require.Error(t, err)
		require.Less(t, len(err.Error()), 1000, "%.200s", err)
	}
}

func TestMonitorScopeSelector(t *testing.T) {
	require.NoError(t, validate.MonitorScopeSelector(nil))
	require.NoError(t, validate.MonitorScopeSelector(&networkservice.MonitorScopeSelector{
		PathSegments: segments(validate.MaxPathSegments), NetworkServices: repeat("svc", validate.MaxListItems)}))
	requireLimit(t, validate.MonitorScopeSelector(&networkservice.MonitorScopeSelector{PathSegments: segments(validate.MaxPathSegments + 1)}),
		"monitor_scope_selector.path_segments", "MaxPathSegments", validate.MaxPathSegments, validate.MaxPathSegments+1)
	requireLimit(t, validate.MonitorScopeSelector(&networkservice.MonitorScopeSelector{NetworkServices: repeat("svc", validate.MaxListItems+1)}),
		"monitor_scope_selector.network_services", "MaxListItems", validate.MaxListItems, validate.MaxListItems+1)
}

// BenchmarkRequest checks a Request as a hop of a remote vWire gets it (six segments with tokens
// of about 950 bytes, as in the sdk's sandbox): what validation, bounds included, costs each hop.
func BenchmarkRequest(b *testing.B) {
	c := validConnection()
	c.Labels = map[string]string{"nodeName": "node-1", "podName": "nsc-1", "app": "web"}
	c.Path = &networkservice.Path{Index: 5, PathSegments: segments(6)}
	for _, s := range c.Path.PathSegments {
		s.Token = strings.Repeat("t", 950)
	}
	r := &networkservice.NetworkServiceRequest{Connection: c, MechanismPreferences: preferences(2)}
	b.ReportAllocs()
	for b.Loop() {
		if err := validate.Request(r); err != nil {
			b.Fatal(err)
		}
	}
}
