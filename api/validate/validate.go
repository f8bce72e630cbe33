// Package validate checks that NSM API messages are well formed before a chain acts on them.
//
// NSM's API module carries the messages but says nothing about which values make sense: an
// interface name of 19 bytes, a VNI of 0 or a CIDR that does not parse travels the whole path and
// fails deep in a forwarder, with an error that names neither the field nor the fix. These
// functions fail at the first hop instead, with an *Error that names the field path (proto field
// names from the checked message, map keys quoted, list indices in brackets) and the problem.
//
// Guarantees:
//   - form only, never time: an expired token or an expiration time in the past passes, because
//     Close must still be accepted after a token expired;
//   - the first problem found is returned, in a fixed order (fields in proto order, map keys
//     sorted), so one message always gives the same error;
//   - every input has a bound, a Max* constant (limits.go) far above what a real mesh sends; a
//     count is checked before the items it counts, so an oversized list costs nothing to refuse,
//     and the error names the constant, its value and the value seen (Error.Limit is the name);
//   - the status of every error is InvalidArgument, also after wrapping with fmt.Errorf("%w");
//   - nothing is changed, and no input makes a check panic.
package validate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/api/interdomain"
)

// Error is one malformed field, or one over a bound.
type Error struct {
	Field   string // path from the checked message, e.g. connection.mechanism.parameters["name"]
	Problem string // what is wrong with its value
	Limit   string // the name of the bound (a Max* constant) the value is over; empty when malformed
}

func (e *Error) Error() string {
	return e.Field + ": " + e.Problem
}

// GRPCStatus makes a malformed field, or one over a bound, an InvalidArgument for gRPC, wrapped
// or not.
func (e *Error) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// at turns the plain error of a leaf check into an *Error for field.
func at(field string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Field: field, Problem: err.Error()}
	var bound *Error
	if errors.As(err, &bound) {
		e.Limit = bound.Limit
	}
	return e
}

// Request checks a client's request: its connection and each of its mechanism preferences.
func Request(r *networkservice.NetworkServiceRequest) error {
	if r == nil {
		return invalid("request", "missing")
	}
	if err := connection("connection", r.GetConnection()); err != nil {
		return err
	}
	prefs := r.GetMechanismPreferences()
	if err := count("mechanism_preferences", "", "MaxMechanismPreferences", MaxMechanismPreferences, len(prefs)); err != nil {
		return err
	}
	for i, m := range prefs {
		if err := mechanism(fmt.Sprintf("mechanism_preferences[%d]", i), m, false); err != nil {
			return err
		}
	}
	return nil
}

// Connection checks a connection as Request and Close carry it. Its mechanism, when present, is
// held to the rules of a preference (MechanismPreference): Close may carry the connection of a
// Request that failed half way, and a cleanup must not be refused for a missing parameter. A
// caller that holds a negotiated connection checks its mechanism with Mechanism as well.
func Connection(c *networkservice.Connection) error {
	return connection("connection", c)
}

// ConnectionLimits checks only the bounds of a connection (its ID, labels and path), not its
// form: for Close, which is never refused for its form but must not make a component check a
// path of any length. A nil connection passes.
func ConnectionLimits(c *networkservice.Connection) error {
	const field = "connection"
	if err := atMost(field, ".id", "MaxIDBytes", MaxIDBytes, c.GetId()); err != nil {
		return err
	}
	if err := labels(field, ".labels", c.GetLabels()); err != nil {
		return err
	}
	return pathLimits(field+".path", c.GetPath())
}

func connection(field string, c *networkservice.Connection) error {
	if c == nil {
		return invalid(field, "missing")
	}
	if c.GetId() == "" {
		return invalid(field+".id", "empty")
	}
	if err := atMost(field, ".id", "MaxIDBytes", MaxIDBytes, c.GetId()); err != nil {
		return err
	}
	if err := at(field+".network_service", Name(c.GetNetworkService())); err != nil {
		return err
	}
	if c.GetMechanism() != nil {
		if err := mechanism(field+".mechanism", c.GetMechanism(), false); err != nil {
			return err
		}
	}
	if err := ipContext(field+".context.ip_context", c.GetContext().GetIpContext()); err != nil {
		return err
	}
	if err := dnsContext(field+".context.dns_context", c.GetContext().GetDnsContext()); err != nil {
		return err
	}
	eth := c.GetContext().GetEthernetContext()
	if err := at(field+".context.ethernet_context.src_mac", optionalMAC(eth.GetSrcMac())); err != nil {
		return err
	}
	if err := at(field+".context.ethernet_context.dst_mac", optionalMAC(eth.GetDstMac())); err != nil {
		return err
	}
	if err := labels(field, ".context.extra_context", c.GetContext().GetExtraContext()); err != nil {
		return err
	}
	if err := labels(field, ".labels", c.GetLabels()); err != nil {
		return err
	}
	if err := path(field+".path", c.GetPath()); err != nil {
		return err
	}
	if nse := c.GetNetworkServiceEndpointName(); nse != "" {
		if err := at(field+".network_service_endpoint_name", Name(nse)); err != nil {
			return err
		}
	}
	if err := at(field+".payload", payloadName(c.GetPayload())); err != nil {
		return err
	}
	if _, ok := networkservice.State_name[int32(c.GetState())]; !ok {
		return invalid(field+".state", "%d is not a State (0..%d)", c.GetState(), len(networkservice.State_name)-1)
	}
	return nil
}

func path(field string, p *networkservice.Path) error {
	if err := pathLimits(field, p); err != nil {
		return err
	}
	segments := p.GetPathSegments()
	if len(segments) > 0 && int(p.GetIndex()) >= len(segments) {
		return invalid(field+".index", "%d is past the last of %d path segments", p.GetIndex(), len(segments))
	}
	for i, s := range segments {
		if s.GetName() == "" {
			return invalid(fmt.Sprintf("%s.path_segments[%d].name", field, i), "empty")
		}
	}
	return nil
}

// pathLimits checks the bounds of a path: its length, and each segment's strings and metrics.
func pathLimits(field string, p *networkservice.Path) error {
	segments := p.GetPathSegments()
	if err := count(field, ".path_segments", "MaxPathSegments", MaxPathSegments, len(segments)); err != nil {
		return err
	}
	for i, s := range segments {
		if len(s.GetName()) <= MaxNameBytes && len(s.GetId()) <= MaxIDBytes && len(s.GetToken()) <= MaxTokenBytes && len(s.GetMetrics()) == 0 {
			continue // the usual segment: no field name to make
		}
		item := fmt.Sprintf("%s.path_segments[%d]", field, i)
		if err := atMost(item, ".name", "MaxNameBytes", MaxNameBytes, s.GetName()); err != nil {
			return err
		}
		if err := atMost(item, ".id", "MaxIDBytes", MaxIDBytes, s.GetId()); err != nil {
			return err
		}
		if err := atMost(item, ".token", "MaxTokenBytes", MaxTokenBytes, s.GetToken()); err != nil {
			return err
		}
		if err := labels(item, ".metrics", s.GetMetrics()); err != nil {
			return err
		}
	}
	return nil
}

// dnsContext checks the bounds of a DNS context; its addresses and domains are the resolver's
// business, as in NSM.
func dnsContext(field string, c *networkservice.DNSContext) error {
	configs := c.GetConfigs()
	if err := count(field, ".configs", "MaxListItems", MaxListItems, len(configs)); err != nil {
		return err
	}
	for i, config := range configs {
		item := fmt.Sprintf("%s.configs[%d]", field, i)
		if err := names(item, ".dns_server_ips", config.GetDnsServerIps()); err != nil {
			return err
		}
		if err := names(item, ".search_domains", config.GetSearchDomains()); err != nil {
			return err
		}
	}
	return nil
}

// IPContext checks that every address, prefix, route and neighbour of an IP context parses.
// IPv4 and IPv6 may mix, also between the source and destination addresses (dual stack). A nil
// context is an empty one.
func IPContext(c *networkservice.IPContext) error {
	return ipContext("ip_context", c)
}

func ipContext(field string, c *networkservice.IPContext) error {
	if err := prefixes(field+".src_ip_addrs", c.GetSrcIpAddrs()); err != nil {
		return err
	}
	if err := prefixes(field+".dst_ip_addrs", c.GetDstIpAddrs()); err != nil {
		return err
	}
	if err := routes(field+".src_routes", c.GetSrcRoutes()); err != nil {
		return err
	}
	if err := routes(field+".dst_routes", c.GetDstRoutes()); err != nil {
		return err
	}
	if err := prefixes(field+".excluded_prefixes", c.GetExcludedPrefixes()); err != nil {
		return err
	}
	if err := count(field, ".ip_neighbors", "MaxListItems", MaxListItems, len(c.GetIpNeighbors())); err != nil {
		return err
	}
	for i, n := range c.GetIpNeighbors() {
		item := fmt.Sprintf("%s.ip_neighbors[%d]", field, i)
		if err := at(item+".ip", ipAddr(n.GetIp())); err != nil {
			return err
		}
		if _, err := net.ParseMAC(n.GetHardwareAddress()); err != nil {
			return invalid(item+".hardware_address", "%.100q is not a MAC address", n.GetHardwareAddress())
		}
	}
	if err := count(field, ".extra_prefix_request", "MaxListItems", MaxListItems, len(c.GetExtraPrefixRequest())); err != nil {
		return err
	}
	if err := prefixes(field+".extra_prefixes", c.GetExtraPrefixes()); err != nil {
		return err
	}
	if err := count(field, ".policies", "MaxListItems", MaxListItems, len(c.GetPolicies())); err != nil {
		return err
	}
	for i, p := range c.GetPolicies() {
		item := fmt.Sprintf("%s.policies[%d]", field, i)
		if p.GetFrom() != "" {
			if err := at(item+".from", prefix(p.GetFrom())); err != nil {
				return err
			}
		}
		if _, err := networkservice.ParsePortRange(p.GetDstPort()); err != nil {
			return invalid(item+".dst_port", "%.100q is not a port or a range start-end", p.GetDstPort())
		}
		if _, err := networkservice.ParsePortRange(p.GetSrcPort()); err != nil {
			return invalid(item+".src_port", "%.100q is not a port or a range start-end", p.GetSrcPort())
		}
		if err := routes(item+".routes", p.GetRoutes()); err != nil {
			return err
		}
	}
	return nil
}

func prefixes(field string, list []string) error {
	if err := count(field, "", "MaxListItems", MaxListItems, len(list)); err != nil {
		return err
	}
	for i, p := range list {
		if err := at(fmt.Sprintf("%s[%d]", field, i), prefix(p)); err != nil {
			return err
		}
	}
	return nil
}

func routes(field string, list []*networkservice.Route) error {
	if err := count(field, "", "MaxListItems", MaxListItems, len(list)); err != nil {
		return err
	}
	for i, r := range list {
		item := fmt.Sprintf("%s[%d]", field, i)
		if err := at(item+".prefix", prefix(r.GetPrefix())); err != nil {
			return err
		}
		if r.GetNextHop() != "" {
			if err := at(item+".nextHop", ipAddr(r.GetNextHop())); err != nil {
				return err
			}
		}
	}
	return nil
}

// Name checks a network service or endpoint name: letters, digits, '-', '_' and '.', starting
// and ending with a letter or digit, at most MaxNameBytes (a Kubernetes object name fits), then
// optionally '@' and a DNS domain of at most MaxNameBytes. The error is plain: wrap it with the
// field it came from (the *Error of a bound keeps its Limit when wrapped with at).
func Name(name string) error {
	local, domain := interdomain.Split(name)
	switch {
	case name == "":
		return errors.New("empty name")
	case len(local) > MaxNameBytes:
		return over("name", "MaxNameBytes", MaxNameBytes, len(local), "bytes before its domain")
	case local == "":
		return fmt.Errorf("name %.100q is empty before '@'", name)
	}
	for i := range len(local) {
		inner := i > 0 && i < len(local)-1
		if b := local[i]; !isAlnum(b) && !(inner && strings.IndexByte("-_.", b) >= 0) {
			return fmt.Errorf("name %.100q has %q at byte %d; use letters, digits and '-', '_', '.' inside", name, b, i)
		}
	}
	if !interdomain.Is(name) {
		return nil
	}
	if err := domainName(domain); err != nil {
		return fmt.Errorf("name %.100q: %w", name, err)
	}
	return nil
}

func domainName(domain string) error {
	if len(domain) > MaxNameBytes {
		return over("domain", "MaxNameBytes", MaxNameBytes, len(domain), "bytes")
	}
	if domain == "" {
		return errors.New("domain is empty")
	}
	for label := range strings.SplitSeq(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("domain label %.100q is not 1..63 letters, digits or inner '-'", label)
		}
		for i := range len(label) {
			if !isAlnum(label[i]) && label[i] != '-' {
				return fmt.Errorf("domain label %.100q has %q", label, label[i])
			}
		}
	}
	return nil
}

func isAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// InterfaceName checks a Linux interface name by the kernel's own rule (dev_valid_name). The
// error is plain: wrap it with the field it came from.
func InterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > kernel.LinuxIfMaxLength:
		return fmt.Errorf("interface name %.100q is %d bytes, limit %d", name, len(name), kernel.LinuxIfMaxLength)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %.100q is reserved", name)
	}
	if i := strings.IndexAny(name, "/: \t\n\v\f\r\x00"); i >= 0 {
		return fmt.Errorf("interface name %.100q has %q at byte %d; Linux forbids '/', ':' and white space", name, name[i], i)
	}
	return nil
}

func payloadName(p string) error {
	switch p {
	case "", payload.IP, payload.Ethernet:
		return nil
	}
	return fmt.Errorf("payload %.100q; want %s or %s", p, payload.IP, payload.Ethernet)
}

func prefix(s string) error {
	if _, err := netip.ParsePrefix(s); err != nil {
		return fmt.Errorf("%.100q is not an address with a prefix length (CIDR)", s)
	}
	return nil
}

func ipAddr(s string) error {
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("%.100q is not an IP address", s)
	}
	return nil
}

func optionalMAC(s string) error {
	if s == "" {
		return nil
	}
	if _, err := net.ParseMAC(s); err != nil {
		return fmt.Errorf("%.100q is not a MAC address", s)
	}
	return nil
}

func portNumber(s string) error {
	if n, err := strconv.ParseUint(s, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %.100q is not in 1..65535", s)
	}
	return nil
}
