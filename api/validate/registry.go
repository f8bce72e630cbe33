package validate

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/registry"
)

// NetworkService checks a network service record as Register carries it.
func NetworkService(ns *registry.NetworkService) error {
	const field = "network_service"
	if ns == nil {
		return invalid(field, "missing")
	}
	if err := at(field+".name", Name(ns.GetName())); err != nil {
		return err
	}
	if err := at(field+".payload", payloadName(ns.GetPayload())); err != nil {
		return err
	}
	for i, m := range ns.GetMatches() {
		item := fmt.Sprintf("%s.matches[%d]", field, i)
		if _, ok := m.GetSourceSelector()[""]; ok {
			return invalid(item+".source_selector", "empty label key")
		}
		for j, r := range m.GetRoutes() {
			if _, ok := r.GetDestinationSelector()[""]; ok {
				return invalid(fmt.Sprintf("%s.routes[%d].destination_selector", item, j), "empty label key")
			}
		}
	}
	return nil
}

// NetworkServiceEndpoint checks an endpoint record as Register carries it. Its expiration time
// is not looked at: whether a registration is still alive is the registry's business.
func NetworkServiceEndpoint(nse *registry.NetworkServiceEndpoint) error {
	const field = "network_service_endpoint"
	if nse == nil {
		return invalid(field, "missing")
	}
	if err := at(field+".name", Name(nse.GetName())); err != nil {
		return err
	}
	names := nse.GetNetworkServiceNames()
	for i, name := range names {
		if err := at(fmt.Sprintf("%s.network_service_names[%d]", field, i), Name(name)); err != nil {
			return err
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(nse.GetNetworkServiceLabels())) {
		if !slices.Contains(names, ns) {
			return invalid(fmt.Sprintf("%s.network_service_labels[%q]", field, ns),
				"labels for a network service not in network_service_names %q", names)
		}
	}
	if nse.GetUrl() != "" {
		if err := at(field+".url", endpointURL(nse.GetUrl())); err != nil {
			return err
		}
	}
	return nil
}

// NetworkServiceQuery checks a Find query. The record in it is a template whose empty fields
// match anything, so only its presence is checked.
func NetworkServiceQuery(q *registry.NetworkServiceQuery) error {
	if q.GetNetworkService() == nil {
		return invalid("network_service", "missing")
	}
	return nil
}

// NetworkServiceEndpointQuery checks a Find query the way NetworkServiceQuery does.
func NetworkServiceEndpointQuery(q *registry.NetworkServiceEndpointQuery) error {
	if q.GetNetworkServiceEndpoint() == nil {
		return invalid("network_service_endpoint", "missing")
	}
	return nil
}

// endpointURL accepts the URL forms an endpoint is dialled by: unix:///path, tcp://host:port
// and a bare host:port.
func endpointURL(s string) error {
	const want = "want unix:///path, tcp://host:port, host:port or inode://<dev>/<ino> (a socket passed by descriptor)"
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return fmt.Errorf("%q: %s", s, want)
		}
		return portNumber(port)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %s", s, want)
	}
	switch {
	case u.Scheme == "unix" && u.Host == "" && strings.HasPrefix(u.Path, "/") && u.RawQuery == "" && u.Fragment == "":
		return nil
	case u.Scheme == "tcp" && u.Hostname() != "" && (u.Path == "" || u.Path == "/") && u.User == nil && u.RawQuery == "" && u.Fragment == "":
		return portNumber(u.Port())
	case u.Scheme == "inode":
		return inodeURL(u)
	}
	return fmt.Errorf("%q: %s", s, want)
}
