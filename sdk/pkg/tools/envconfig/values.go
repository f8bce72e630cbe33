package envconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"vwire.dev/api/validate"

	"vwire.dev/sdk/pkg/tools/hopurl"
)

// URL is the URL of a next hop, to dial (and, for an endpoint, to listen on and register):
// unix:///path/to/socket or tcp://host:port, as hopurl accepts it; host:port without a scheme,
// as NSM's manifests give it (registry:5002), is tcp://host:port. Its URL is nil while unset.
type URL struct{ *url.URL }

// Decode implements envconfig.Decoder.
func (u *URL) Decode(value string) error {
	parsed, err := parseURL(value)
	if err != nil {
		return err
	}
	if _, err := hopurl.Target(parsed); err != nil {
		return urlProblem(err)
	}
	u.URL = parsed
	return nil
}

// TypeName implements Value.
func (URL) TypeName() string { return "URL" }

func (u URL) String() string {
	if u.URL == nil {
		return ""
	}
	return u.URL.String()
}

// ListenURL is a URL to serve on: a URL, or a tcp URL without a host (tcp://:5002 or :5002)
// for every address of the host.
type ListenURL struct{ *url.URL }

// Decode implements envconfig.Decoder.
func (u *ListenURL) Decode(value string) error {
	parsed, err := parseURL(value)
	if err != nil {
		return err
	}
	check := *parsed
	if check.Scheme == hopurl.TCP && check.Hostname() == "" && check.Opaque == "" {
		check.Host = net.JoinHostPort("0.0.0.0", check.Port()) // what "no host" listens on
	}
	if _, err := hopurl.Target(&check); err != nil {
		return urlProblem(err)
	}
	u.URL = parsed
	return nil
}

// TypeName implements Value.
func (ListenURL) TypeName() string { return "URL" }

func (u ListenURL) String() string {
	if u.URL == nil {
		return ""
	}
	return u.URL.String()
}

// ListenURLs is a list of ListenURLs, each once: unix:///var/lib/networkservicemesh/nsm.io.sock,tcp://10.0.0.1:5001.
type ListenURLs []*url.URL

// Decode implements envconfig.Decoder.
func (l *ListenURLs) Decode(value string) error {
	var out ListenURLs
	err := DecodeList(value, func(item string) error {
		var u ListenURL
		if err := u.Decode(item); err != nil {
			return err
		}
		for _, o := range out {
			if o.String() == u.String() {
				return errors.New("given twice")
			}
		}
		out = append(out, u.URL)
		return nil
	})
	if err != nil {
		return err
	}
	if len(out) == 0 {
		return errors.New("no URL; give at least one, e.g. unix:///var/lib/networkservicemesh/nsm.io.sock")
	}
	*l = out
	return nil
}

// TypeName implements Value.
func (ListenURLs) TypeName() string { return "URL list" }

func (l ListenURLs) String() string {
	s := make([]string, len(l))
	for i, u := range l {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}

const urlForms = "use unix:///path/to/socket or tcp://host:port"

func parseURL(value string) (*url.URL, error) {
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("empty; " + urlForms)
	}
	if !strings.Contains(value, "://") {
		// NSM's manifests name a tcp peer as host:port.
		if _, port, err := net.SplitHostPort(value); err == nil && port != "" && strings.Trim(port, "0123456789") == "" {
			value = "tcp://" + value
		}
	}
	u, err := url.Parse(value)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("not a URL (%v); %s", err, urlForms)
	}
	return u, nil
}

// urlProblem keeps what hopurl says is wrong, without the URL Process shows already.
func urlProblem(err error) error {
	var herr *hopurl.Error
	if errors.As(err, &herr) {
		return errors.New(herr.Problem)
	}
	return err
}

// Prefixes is a list of CIDRs, IPv4 and IPv6 mixed, that do not overlap: 169.254.0.0/16,fd00::/64.
type Prefixes []netip.Prefix

// Decode implements envconfig.Decoder.
func (p *Prefixes) Decode(value string) error {
	var out Prefixes
	err := DecodeList(value, func(item string) error {
		prefix, err := netip.ParsePrefix(item)
		switch {
		case strings.ContainsAny(item, "[]"):
			return errors.New("NSM's groups in [brackets] are not supported; list the CIDRs without brackets")
		case err != nil:
			return errors.New("not a CIDR; write address/length, e.g. 169.254.0.0/16 or fd00::/64")
		case prefix.Addr().Is4In6():
			return fmt.Errorf("an IPv4-mapped IPv6 prefix; write it as IPv4")
		case prefix.Addr().Zone() != "":
			return errors.New("has a zone; a CIDR has none")
		case prefix != prefix.Masked():
			return fmt.Errorf("has host bits set; did you mean %s?", prefix.Masked())
		}
		for _, o := range out {
			if o.Overlaps(prefix) {
				return fmt.Errorf("overlaps %s", o)
			}
		}
		out = append(out, prefix)
		return nil
	})
	if err != nil {
		return err
	}
	if len(out) == 0 {
		return errors.New("no CIDR; give at least one, e.g. 169.254.0.0/16")
	}
	*p = out
	return nil
}

// TypeName implements Value.
func (Prefixes) TypeName() string { return "CIDR list" }

// PrefixGroups is NSM_CIDR_PREFIX as NSM's endpoints read it (NSM's cidr.Groups): address pools
// of their own, each a Prefixes in brackets, [10.0.0.0/24,fd00::/120],[10.1.0.0/24]; a client
// gets addresses from every group. Without brackets the list is one group, as Prefixes reads it
// (NSM makes each item a group; the two differ only for items of one family); beside bracketed
// groups, an item without brackets is a group of its own, as in NSM. No prefix overlaps another,
// in its group or any other: group IPAMs refuse that.
type PrefixGroups [][]netip.Prefix

// Decode implements envconfig.Decoder. An error names the group (by its number, from 1) and
// the byte of a misplaced bracket or comma.
func (g *PrefixGroups) Decode(value string) error {
	if !strings.ContainsAny(value, "[]") {
		var one Prefixes
		if err := one.Decode(value); err != nil {
			return err
		}
		*g = PrefixGroups{one}
		return nil
	}
	var out PrefixGroups
	add := func(text string) error {
		var group Prefixes
		if strings.TrimSpace(text) == "" {
			return fmt.Errorf("group %d is empty; give it a CIDR or remove it", len(out)+1)
		}
		if err := group.Decode(text); err != nil {
			return fmt.Errorf("group %d %q: %w", len(out)+1, strings.TrimSpace(text), err)
		}
		for _, p := range group {
			for i, other := range out {
				for _, o := range other {
					if o.Overlaps(p) {
						return fmt.Errorf("group %d: %s overlaps %s of group %d", len(out)+1, p, o, i+1)
					}
				}
			}
		}
		out = append(out, group)
		return nil
	}
	skipSpace := func(i int) int {
		for i < len(value) && (value[i] == ' ' || value[i] == '\t') {
			i++
		}
		return i
	}
	// Each turn reads one group, at the start of the value or after its comma.
	for i := skipSpace(0); i < len(value); i = skipSpace(i) {
		switch value[i] {
		case ',':
			if len(out) == 0 {
				return fmt.Errorf("',' at byte %d before any group; remove it", i)
			}
			return fmt.Errorf("',' at byte %d after a comma; remove the extra comma", i)
		case ']':
			return fmt.Errorf("unbalanced brackets: ']' at byte %d closes no '['", i)
		case '[':
			end := strings.IndexAny(value[i+1:], "[]")
			if end < 0 || value[i+1+end] == '[' {
				return fmt.Errorf("unbalanced brackets: '[' at byte %d is not closed; groups do not nest", i)
			}
			if err := add(value[i+1 : i+1+end]); err != nil {
				return err
			}
			i += end + 2
		default: // a group of one, without brackets
			end := strings.IndexAny(value[i:], ",[]")
			if end < 0 {
				end = len(value) - i
			}
			if err := add(value[i : i+end]); err != nil {
				return err
			}
			i += end
		}
		if i = skipSpace(i); i == len(value) {
			break
		}
		if value[i] == ']' {
			return fmt.Errorf("unbalanced brackets: ']' at byte %d closes no '['", i)
		}
		if value[i] != ',' {
			return fmt.Errorf("%q at byte %d follows group %d; separate groups with a comma", value[i], i, len(out))
		}
		if strings.TrimSpace(value[i+1:]) == "" {
			return fmt.Errorf("',' at byte %d ends the value; remove it or add a group", i)
		}
		i++
	}
	*g = out
	return nil
}

// TypeName implements Value.
func (PrefixGroups) TypeName() string { return "CIDR groups" }

// Labels is a list of key=value pairs (key:value, as NSM's endpoints write them, works too):
// app=web,version=2. Keys are not empty and appear once.
type Labels map[string]string

// Decode implements envconfig.Decoder.
func (l *Labels) Decode(value string) error {
	out := Labels{}
	err := DecodeList(value, func(item string) error {
		i := strings.IndexAny(item, "=:")
		if i < 0 {
			return errors.New("not key=value")
		}
		k, v := strings.TrimSpace(item[:i]), strings.TrimSpace(item[i+1:])
		if k == "" {
			return errors.New("has an empty key")
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("key %q given twice", k)
		}
		out[k] = v
		return nil
	})
	if err != nil {
		return err
	}
	*l = out
	return nil
}

// TypeName implements Value.
func (Labels) TypeName() string { return "key=value list" }

// Name is a network service or endpoint name, as vwire.dev/api/validate accepts it:
// icmp-responder, vpn@corp.example.
type Name string

// Decode implements envconfig.Decoder.
func (n *Name) Decode(value string) error {
	value = strings.TrimSpace(value)
	if err := validate.Name(value); err != nil {
		return err
	}
	*n = Name(value)
	return nil
}

// TypeName implements Value.
func (Name) TypeName() string { return "name" }

// Names is a list of at least one Name, each once.
type Names []string

// Decode implements envconfig.Decoder.
func (n *Names) Decode(value string) error {
	var out Names
	err := DecodeList(value, func(item string) error {
		if err := validate.Name(item); err != nil {
			return err
		}
		if slices.Contains(out, item) {
			return errors.New("given twice")
		}
		out = append(out, item)
		return nil
	})
	if err != nil {
		return err
	}
	if len(out) == 0 {
		return errors.New("no name; give at least one")
	}
	*n = out
	return nil
}

// TypeName implements Value.
func (Names) TypeName() string { return "name list" }

// Level is how much a command logs: a slog level, or LevelTrace.
type Level slog.Level

// LevelTrace logs everything DEBUG does, and turns on per-element tracing of chains
// (sdk/pkg/networkservice/core/trace).
const LevelTrace = Level(slog.LevelDebug - 4)

var levels = []struct {
	name  string
	level Level
}{
	{"TRACE", LevelTrace},
	{"DEBUG", Level(slog.LevelDebug)},
	{"INFO", Level(slog.LevelInfo)},
	{"WARN", Level(slog.LevelWarn)},
	{"ERROR", Level(slog.LevelError)},
}

// Decode implements envconfig.Decoder; case does not matter. NSM's levels (logrus's) work too:
// WARNING is WARN, FATAL and PANIC are ERROR.
func (l *Level) Decode(value string) error {
	name := strings.ToUpper(strings.TrimSpace(value))
	switch name {
	case "WARNING":
		name = "WARN"
	case "FATAL", "PANIC":
		name = "ERROR"
	}
	for _, x := range levels {
		if x.name == name {
			*l = x.level
			return nil
		}
	}
	return errors.New("want one of TRACE, DEBUG, INFO, WARN, ERROR")
}

// TypeName implements Value.
func (Level) TypeName() string { return "level" }

func (l Level) String() string {
	for _, x := range levels {
		if x.level == l {
			return x.name
		}
	}
	return slog.Level(l).String()
}

// DecodeList decodes a comma-separated list, calling each with every item, trimmed of spaces.
// An empty value is an empty list; an empty item is an error, and the error of an item names it
// (item 2 "fd00::/129": ...) when the list has more than one.
func DecodeList(value string, each func(item string) error) error {
	if strings.TrimSpace(value) == "" {
		return nil
	}
	items := strings.Split(value, ",")
	for i, item := range items {
		item = strings.TrimSpace(item)
		err := errors.New("empty item; remove the extra comma")
		if item != "" {
			err = each(item)
		}
		if err != nil {
			if len(items) == 1 {
				return err
			}
			return fmt.Errorf("item %d %q: %w", i+1, item, err)
		}
	}
	return nil
}
