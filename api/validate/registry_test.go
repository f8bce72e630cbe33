package validate_test

import (
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/api/validate"
)

func validNetworkService() *registry.NetworkService {
	return &registry.NetworkService{
		Name:    "my-ns@domain-2",
		Payload: payload.Ethernet,
		Matches: []*registry.Match{{
			SourceSelector: map[string]string{"app": "firewall"},
			Routes: []*registry.Destination{
				{DestinationSelector: map[string]string{"app": "{{.app}}"}, Weight: 10},
			},
		}},
	}
}

func TestNetworkService(t *testing.T) {
	tests := []struct {
		name   string
		change func(ns *registry.NetworkService)
		field  string
	}{
		{name: "valid", change: func(*registry.NetworkService) {}},
		{name: "local name, no payload", change: func(ns *registry.NetworkService) { ns.Name, ns.Payload = "icmp-responder", "" }},
		{name: "empty name", change: func(ns *registry.NetworkService) { ns.Name = "" }, field: "network_service.name"},
		{name: "bad name", change: func(ns *registry.NetworkService) { ns.Name = "ns/1" }, field: "network_service.name"},
		{name: "bad domain", change: func(ns *registry.NetworkService) { ns.Name = "ns@-corp" }, field: "network_service.name"},
		{name: "bad payload", change: func(ns *registry.NetworkService) { ns.Payload = "L2" }, field: "network_service.payload"},
		{name: "empty source key", change: func(ns *registry.NetworkService) {
			ns.Matches = append(ns.Matches, &registry.Match{SourceSelector: map[string]string{"": "x"}})
		}, field: "network_service.matches[1].source_selector"},
		{name: "empty destination key", change: func(ns *registry.NetworkService) {
			ns.Matches[0].Routes = append(ns.Matches[0].Routes, &registry.Destination{DestinationSelector: map[string]string{"": ""}})
		}, field: "network_service.matches[0].routes[1].destination_selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := validNetworkService()
			tt.change(ns)
			requireField(t, tt.field, validate.NetworkService(ns))
		})
	}
	requireField(t, "network_service", validate.NetworkService(nil))
}

func validEndpoint() *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{
		Name:                "nse-1",
		NetworkServiceNames: []string{"icmp-responder", "vpn@corp.example"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{
			"icmp-responder": {Labels: map[string]string{"app": "icmp"}},
		},
		Url:            "tcp://192.0.2.10:5001",
		ExpirationTime: timestamppb.New(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
}

func TestNetworkServiceEndpoint(t *testing.T) {
	tests := []struct {
		name   string
		change func(nse *registry.NetworkServiceEndpoint)
		field  string
	}{
		{name: "valid, expired", change: func(*registry.NetworkServiceEndpoint) {}},
		{name: "unix url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "unix:///var/lib/nsm/nse.sock" }},
		{name: "tcp ipv6 url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "tcp://[fd00::1]:5001" }},
		{name: "socket passed by descriptor", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "inode://4/4026532000" }},
		{name: "bare host:port", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "nse-1.svc:5001" }},
		{name: "no url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "" }, field: "network_service_endpoint.url"},
		{name: "empty name", change: func(nse *registry.NetworkServiceEndpoint) { nse.Name = "" }, field: "network_service_endpoint.name"},
		{name: "empty service name", change: func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceNames[1] = ""
		}, field: "network_service_endpoint.network_service_names[1]"},
		{name: "labels of another service", change: func(nse *registry.NetworkServiceEndpoint) {
			nse.NetworkServiceLabels["zz"] = &registry.NetworkServiceLabels{}
			nse.NetworkServiceLabels["other"] = &registry.NetworkServiceLabels{}
		}, field: `network_service_endpoint.network_service_labels["other"]`},
		{name: "http url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "http://nse:80" }, field: "network_service_endpoint.url"},
		{name: "tcp url without port", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "tcp://nse" }, field: "network_service_endpoint.url"},
		{name: "tcp url port 0", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "tcp://nse:0" }, field: "network_service_endpoint.url"},
		{name: "tcp url with path", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "tcp://nse:5001/x" }, field: "network_service_endpoint.url"},
		{name: "relative unix url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "unix://nse.sock" }, field: "network_service_endpoint.url"},
		{name: "bare host", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "nse" }, field: "network_service_endpoint.url"},
		{name: "bare port", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = ":5001" }, field: "network_service_endpoint.url"},
		{name: "bad inode url", change: func(nse *registry.NetworkServiceEndpoint) { nse.Url = "inode://4/x" }, field: "network_service_endpoint.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nse := validEndpoint()
			tt.change(nse)
			requireField(t, tt.field, validate.NetworkServiceEndpoint(nse))
		})
	}
	requireField(t, "network_service_endpoint", validate.NetworkServiceEndpoint(nil))
}

func TestQueries(t *testing.T) {
	requireField(t, "", validate.NetworkServiceQuery(&registry.NetworkServiceQuery{NetworkService: &registry.NetworkService{}, Watch: true}))
	requireField(t, "network_service", validate.NetworkServiceQuery(&registry.NetworkServiceQuery{}))
	requireField(t, "network_service", validate.NetworkServiceQuery(nil))

	// A template matches by what it has: an endpoint query without a name is fine.
	nseQuery := &registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: &registry.NetworkServiceEndpoint{
		NetworkServiceNames: []string{"icmp-responder"},
	}}
	requireField(t, "", validate.NetworkServiceEndpointQuery(nseQuery))
	requireField(t, "network_service_endpoint", validate.NetworkServiceEndpointQuery(&registry.NetworkServiceEndpointQuery{}))
}
