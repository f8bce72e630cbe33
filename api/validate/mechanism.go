package validate

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/ipsec"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/memif"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/noop"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/srv6"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vfio"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
)

// Mechanism checks a negotiated mechanism, as a connection carries it once both sides of a hop
// agreed: each parameter present is well formed, and those the type cannot work without (the
// kernel interface name, the VXLAN VNI, the WireGuard source key, the VLAN ID) are there.
func Mechanism(m *networkservice.Mechanism) error {
	return mechanism("mechanism", m, true)
}

// MechanismPreference checks a mechanism a client offers. It may leave out what the other side
// of the hop fills in (the interface name, the VNI, the peer's key), but what it carries must be
// well formed.
func MechanismPreference(m *networkservice.Mechanism) error {
	return mechanism("mechanism", m, false)
}

type paramCheck func(value string) error

type mechanismType struct {
	name     string
	class    string                // cls.LOCAL or cls.REMOTE; empty when either fits
	params   map[string]paramCheck // this type's own parameters, checked before commonParams
	required []string              // parameters a negotiated mechanism of this type carries
}

// mechanismTypes is in the order the error for an unknown type lists them.
var mechanismTypes = []mechanismType{
	{
		name: kernel.MECHANISM, class: cls.LOCAL,
		params:   map[string]paramCheck{kernel.InterfaceNameKey: InterfaceName},
		required: []string{kernel.InterfaceNameKey},
	},
	{name: memif.MECHANISM, class: cls.LOCAL},
	{name: vfio.MECHANISM, class: cls.LOCAL},
	{name: noop.MECHANISM}, // wires nothing, so it fits a hop of either class
	{
		name: vxlan.MECHANISM, class: cls.REMOTE,
		params:   map[string]paramCheck{vxlan.VNI: vni},
		required: []string{vxlan.VNI},
	},
	{
		name: wireguard.MECHANISM, class: cls.REMOTE,
		params:   map[string]paramCheck{wireguard.SrcPublicKey: wireguardKey, wireguard.DstPublicKey: wireguardKey},
		required: []string{wireguard.SrcPublicKey},
	},
	{
		name: vlan.MECHANISM, class: cls.REMOTE,
		params:   map[string]paramCheck{vlan.ID: vlanID},
		required: []string{vlan.ID},
	},
	{name: srv6.MECHANISM, class: cls.REMOTE},
	{name: ipsec.MECHANISM, class: cls.REMOTE},
}

// commonParams are the parameters that mean the same for every type that uses them. Keys not
// here nor in the type's own list are left alone, so a newer peer's parameters pass.
var commonParams = map[string]paramCheck{
	common.SrcIP:         ipAddr,
	common.DstIP:         ipAddr,
	common.SrcOriginalIP: ipAddr,
	common.DstOriginalIP: ipAddr,
	common.SrcPort:       portNumber,
	common.DstPort:       portNumber,
	common.MTU:           mtu,
	common.InodeURL:      fileURL,
	common.NetNSInodeKey: inodeNumber,
}

// mechanism reads an empty parameter as a missing one, as NSM's helpers do.
func mechanism(field string, m *networkservice.Mechanism, negotiated bool) error {
	if m == nil {
		return invalid(field, "missing")
	}
	if c := m.GetCls(); c != cls.LOCAL && c != cls.REMOTE {
		return invalid(field+".cls", "%.100q; want %s or %s", c, cls.LOCAL, cls.REMOTE)
	}
	i := slices.IndexFunc(mechanismTypes, func(t mechanismType) bool { return t.name == m.GetType() })
	if i < 0 {
		names := make([]string, len(mechanismTypes))
		for j, t := range mechanismTypes {
			names[j] = t.name
		}
		return invalid(field+".type", "unknown mechanism type %.100q; known: %s", m.GetType(), strings.Join(names, ", "))
	}
	typ := mechanismTypes[i]
	if typ.class != "" && m.GetCls() != typ.class {
		return invalid(field+".cls", "%s is a %s mechanism, not %s", typ.name, typ.class, m.GetCls())
	}
	params := m.GetParameters()
	if err := stringMap(field, ".parameters", params, "MaxParameterBytes", MaxParameterBytes); err != nil {
		return err
	}
	for _, key := range slices.Sorted(maps.Keys(params)) {
		check, ok := typ.params[key]
		if !ok {
			check = commonParams[key]
		}
		if check == nil || params[key] == "" {
			continue
		}
		if err := at(parameterField(field, key), check(params[key])); err != nil {
			return err
		}
	}
	if negotiated {
		for _, key := range typ.required {
			if params[key] == "" {
				return invalid(parameterField(field, key), "missing; a negotiated %s mechanism carries it", typ.name)
			}
		}
	}
	return nil
}

func parameterField(field, key string) string {
	return fmt.Sprintf("%s.parameters[%q]", field, key)
}

func vni(s string) error {
	if n, err := strconv.ParseUint(s, 10, 32); err != nil || n == 0 || n > 1<<24-1 {
		return fmt.Errorf("VNI %.100q is not in 1..%d", s, 1<<24-1)
	}
	return nil
}

func vlanID(s string) error {
	if n, err := strconv.ParseUint(s, 10, 16); err != nil || n == 0 || n > 4094 {
		return fmt.Errorf("VLAN ID %.100q is not in 1..4094", s)
	}
	return nil
}

func mtu(s string) error {
	if n, err := strconv.ParseUint(s, 10, 32); err != nil || n == 0 {
		return fmt.Errorf("MTU %.100q is not a positive integer", s)
	}
	return nil
}

func wireguardKey(s string) error {
	key, err := base64.StdEncoding.DecodeString(s)
	switch {
	case err != nil:
		return fmt.Errorf("WireGuard key %.100q is not standard base64", s)
	case len(key) != 32:
		return fmt.Errorf("WireGuard key %.100q is %d bytes, want 32", s, len(key))
	}
	return nil
}

func inodeNumber(s string) error {
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return fmt.Errorf("inode %.100q is not a decimal number", s)
	}
	return nil
}

// fileURL accepts the two forms a file shared between processes takes: file:// with a path on
// the sender's side, inode://<dev>/<ino> once the file travels beside a gRPC call.
func fileURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%.100q is not a URL", s)
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" {
			return fmt.Errorf("file URL %.100q has no path", s)
		}
		return nil
	case "inode":
		return inodeURL(u)
	}
	return fmt.Errorf("URL %.100q has scheme %.100q; want file or inode", s, u.Scheme)
}

// inodeURL accepts inode://<dev>/<ino>, decimal numbers: a file (a namespace, a socket) that
// travels beside a gRPC call as a descriptor.
func inodeURL(u *url.URL) error {
	_, devErr := strconv.ParseUint(u.Host, 10, 64)
	_, inoErr := strconv.ParseUint(strings.TrimPrefix(u.Path, "/"), 10, 64)
	if devErr != nil || inoErr != nil {
		return fmt.Errorf("inode URL %.100q is not inode://<dev>/<ino>", u)
	}
	return nil
}
