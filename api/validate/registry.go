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
	if err := recordSize(field, ns); err != nil {
		return err
	}
	if err := at(field+".name", Name(ns.GetName())); err != nil {
		return err
	}
	if err := at(field+".payload", payloadName(ns.GetPayload())); err != nil {
		return err
	}
	if err := count(field, ".matches", "MaxListItems", MaxListItems, len(ns.GetMatches())); err != nil {
		return err
	}
	for i, m := range ns.GetMatches() {
		item := fmt.Sprintf("%s.matches[%d]", field, i)
		if err := labels(item, ".source_selector", m.GetSourceSelector()); err != nil {
			return err
		}
		if _, ok := m.GetSourceSelector()[""]; ok {
			return invalid(item+".source_selector", "empty label key")
		}
		if err := count(item, ".routes", "MaxListItems", MaxListItems, len(m.GetRoutes())); err != nil {
			return err
		}
		for j, r := range m.GetRoutes() {
			selector := fmt.Sprintf("%s.routes[%d].destination_selector", item, j)
			if err := labels(selector, "", r.GetDestinationSelector()); err != nil {
				return err
			}
			if _, ok := r.GetDestinationSelector()[""]; ok {
				return invalid(selector, "empty label key")
			}
		}
		if err := labels(item, ".metadata.labels", m.GetMetadata().GetLabels()); err != nil {
			return err
		}
	}
	return pathIDs(field, ".path_ids", ns.GetPathIds())
}

// NetworkServiceEndpoint checks an endpoint record as Register carries it: a URL is required,
// since nothing can reach an endpoint without one. Its expiration time is not looked at: whether
// a registration is still alive is the registry's business.
func NetworkServiceEndpoint(nse *registry.NetworkServiceEndpoint) error {
	const field = "network_service_endpoint"
	if nse == nil {
		return invalid(field, "missing")
	}
	if err := recordSize(field, nse); err != nil {
		return err
	}
	if err := at(field+".name", Name(nse.GetName())); err != nil {
		return err
	}
	names := nse.GetNetworkServiceNames()
	if err := count(field, ".network_service_names", "MaxListItems", MaxListItems, len(names)); err != nil {
		return err
	}
	for i, name := range names {
		if err := at(fmt.Sprintf("%s.network_service_names[%d]", field, i), Name(name)); err != nil {
			return err
		}
	}
	if err := count(field, ".network_service_labels", "MaxListItems", MaxListItems, len(nse.GetNetworkServiceLabels())); err != nil {
		return err
	}
	for _, ns := range slices.Sorted(maps.Keys(nse.GetNetworkServiceLabels())) {
		item := fmt.Sprintf("%s.network_service_labels[%.100q]", field, ns)
		if !slices.Contains(names, ns) {
			return invalid(item, "labels for a network service not in network_service_names")
		}
		if err := labels(item, ".labels", nse.GetNetworkServiceLabels()[ns].GetLabels()); err != nil {
			return err
		}
	}
	if err := atMost(field, ".url", "MaxURLBytes", MaxURLBytes, nse.GetUrl()); err != nil {
		return err
	}
	if nse.GetUrl() == "" {
		return invalid(field+".url", "empty; an endpoint registers the URL it serves on, which callers dial")
	}
	if err := at(field+".url", endpointURL(nse.GetUrl())); err != nil {
		return err
	}
	return pathIDs(field, ".path_ids", nse.GetPathIds())
}

// NetworkServiceQuery checks a Find query. The record in it is a template whose empty fields
// match anything, so only its presence and its size (MaxRecordBytes) are checked.
func NetworkServiceQuery(q *registry.NetworkServiceQuery) error {
	if q.GetNetworkService() == nil {
		return invalid("network_service", "missing")
	}
	return recordSize("network_service", q.GetNetworkService())
}

// NetworkServiceEndpointQuery checks a Find query the way NetworkServiceQuery does.
func NetworkServiceEndpointQuery(q *registry.NetworkServiceEndpointQuery) error {
	if q.GetNetworkServiceEndpoint() == nil {
		return invalid("network_service_endpoint", "missing")
	}
	return recordSize("network_service_endpoint", q.GetNetworkServiceEndpoint())
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
