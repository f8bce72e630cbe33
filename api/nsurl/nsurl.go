// Package nsurl parses and prints the URL a client asks for a network service by:
// mechanism://network-service[@domain]/interface-name?label=value&...
//
// For example kernel://icmp-responder/nsm-1?app=web asks for icmp-responder over a kernel
// interface named nsm-1, from an endpoint picked with the label app=web, and
// kernel://vpn@corp.example/vpn0 asks the registry of the domain corp.example. NSM's clients
// take this URL from their configuration, but NSM's API module has no parser for it.
//
// Guarantees: Parse accepts only what a Request can carry (a known local mechanism, a valid
// service name, an interface name Linux accepts), and its errors are *validate.Error values
// naming the URL part (scheme, host, path, query), so their gRPC status is InvalidArgument.
// String prints the canonical form (lower-case scheme, labels sorted), and Parse(u.String())
// gives u back for every u that Parse returned.
package nsurl

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"

	"vwire.dev/api/interdomain"
	"vwire.dev/api/validate"
)

// URL is a client's request for a network service.
type URL struct {
	Mechanism      string            // local mechanism type, upper case as on the wire: KERNEL
	NetworkService string            // without the domain
	Domain         string            // empty for the client's own domain
	Interface      string            // name of the interface in the client; empty to let the mesh pick
	Labels         map[string]string // select the endpoint; nil when the URL has none
}

// Parse parses a client URL such as kernel://icmp-responder/nsm-1?app=web.
func Parse(s string) (*URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, invalid("url", "%v", err)
	}
	if u.Opaque != "" || u.Fragment != "" {
		return nil, invalid("url", "want mechanism://network-service[@domain]/interface-name?label=value, got %q", s)
	}
	if u.Scheme == "" {
		return nil, invalid("url scheme", "missing; want a local mechanism such as kernel://")
	}
	// The scheme names the client's own, local mechanism, so the mechanism rules decide it.
	mech := &networkservice.Mechanism{Cls: cls.LOCAL, Type: strings.ToUpper(u.Scheme)}
	if err := validate.MechanismPreference(mech); err != nil {
		var verr *validate.Error
		errors.As(err, &verr) // always one: validate returns nothing else
		return nil, invalid("url scheme", "%s", verr.Problem)
	}

	out := &URL{Mechanism: mech.Type, NetworkService: u.Host}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return nil, invalid("url host", "network service %q has a ':'", u.User.String()+"@"+u.Host)
		}
		if u.Host == "" {
			return nil, invalid("url host", "network service %q has an empty domain", u.User.Username()+"@")
		}
		out.NetworkService, out.Domain = u.User.Username(), u.Host
	}
	if u.Host == "" {
		return nil, invalid("url host", "missing network service")
	}
	if err := validate.Name(out.NetworkServiceName()); err != nil {
		return nil, invalid("url host", "%v", err)
	}

	out.Interface = strings.TrimPrefix(u.Path, "/")
	if out.Interface != "" {
		if err := validate.InterfaceName(out.Interface); err != nil {
			return nil, invalid("url path", "%v", err)
		}
	}

	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, invalid("url query", "%v", err)
	}
	for _, key := range slices.Sorted(maps.Keys(query)) {
		switch values := query[key]; {
		case key == "":
			return nil, invalid("url query", "label with an empty key")
		case len(values) > 1:
			return nil, invalid("url query", "label %q given more than once", key)
		default:
			if out.Labels == nil {
				out.Labels = make(map[string]string, len(query))
			}
			out.Labels[key] = values[0]
		}
	}
	return out, nil
}

// String prints u in canonical form: lower-case scheme, labels sorted by key.
func (u *URL) String() string {
	out := url.URL{Scheme: strings.ToLower(u.Mechanism), Host: u.NetworkService}
	if u.Domain != "" {
		out.User, out.Host = url.User(u.NetworkService), u.Domain
	}
	if u.Interface != "" {
		out.Path = "/" + u.Interface
	}
	query := make(url.Values, len(u.Labels))
	for k, v := range u.Labels {
		query.Set(k, v)
	}
	out.RawQuery = query.Encode() // sorts by key
	return out.String()
}

// NetworkServiceName returns the name a Request carries: name@domain, or name alone.
func (u *URL) NetworkServiceName() string {
	return interdomain.Join(u.NetworkService, u.Domain)
}

func invalid(field, format string, args ...any) error {
	return &validate.Error{Field: field, Problem: fmt.Sprintf(format, args...)}
}
