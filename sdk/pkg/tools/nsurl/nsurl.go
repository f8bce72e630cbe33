// Package nsurl reads a client's network service URL (kernel://service[@domain]/if-name?k=v) the
// way NSM's sdk/pkg/tools/nsurl does, as a conversion of a url.URL a program's configuration
// gave: (*nsurl.NSURL)(&u).NetworkService(), .Labels(), .Mechanism(). The parsing is
// vwire.dev/api/nsurl's, which checks every part.
//
// NSM's methods have no error, nor have these; what a URL that does not parse reads as is made
// for the mesh to refuse it by name: NetworkService is then the whole URL (validate refuses it as
// a service name, quoting it), Labels empty, and Mechanism the scheme in upper case without
// parameters. Err says why it does not parse, for a program that checks first. As NSM's, Labels
// is a map even when empty, which a program may add to.
package nsurl

import (
	"net/url"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"

	"vwire.dev/api/nsurl"
)

// NSURL is a network service URL.
type NSURL url.URL

func (n *NSURL) parse() (*nsurl.URL, error) { return nsurl.Parse((*url.URL)(n).String()) }

// Err is why the URL does not parse, or nil.
func (n *NSURL) Err() error {
	_, err := n.parse()
	return err
}

// NetworkService is the name a Request carries: service, or service@domain.
func (n *NSURL) NetworkService() string {
	u, err := n.parse()
	if err != nil {
		return (*url.URL)(n).String()
	}
	return u.NetworkServiceName()
}

// Labels are the labels the endpoint is selected by (one value each), never nil.
func (n *NSURL) Labels() map[string]string {
	u, err := n.parse()
	if err != nil || u.Labels == nil {
		return map[string]string{}
	}
	return u.Labels
}

// Mechanism is the local mechanism to offer, with the interface name when the URL has one.
func (n *NSURL) Mechanism() *networkservice.Mechanism {
	u, err := n.parse()
	if err != nil {
		return &networkservice.Mechanism{Cls: cls.LOCAL, Type: strings.ToUpper(n.Scheme)}
	}
	m := &networkservice.Mechanism{Cls: cls.LOCAL, Type: u.Mechanism}
	if u.Interface != "" {
		m.Parameters = map[string]string{common.InterfaceNameKey: u.Interface}
	}
	return m
}
