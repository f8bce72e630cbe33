package validate

import (
	"fmt"
	"maps"
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/proto"
)

// The bounds of every input a component takes from a peer. Without them a caller could make a
// component hold, copy and check, for each hop and each refresh, whatever fits in gRPC's
// default 4 MB message: 10,000 mechanism preferences grew an nsmgr from 26 to 49 MB. Each bound
// is far above what a real mesh sends, and the error that enforces it names the constant, its
// value and the value seen.
const (
	// MaxMessageBytes bounds a gRPC message in either direction, at every server (grpcserve)
	// and dialer of the sdk. gRPC's transport enforces it before any of vwire's code runs, with
	// its own ResourceExhausted error: "grpc: received message larger than max (<seen> vs.
	// 1048576)" at a server, "trying to send message larger than max" at a sender. A Request
	// with every other bound at its limit stays under it (a full path of MaxPathSegments tokens
	// of MaxTokenBytes is 512 KiB); a real one is a few KB: a remote vWire's connection in the
	// sdk's sandbox (6 hops, each token carrying its Ed25519 SVID in x5c, about 950 bytes) is
	// 6 KB.
	MaxMessageBytes = 1 << 20

	// MaxMechanismPreferences bounds a Request's mechanism preferences: a client offers each
	// mechanism type it can use (nine are known) once, sometimes twice with other parameters.
	MaxMechanismPreferences = 16

	// MaxPathSegments bounds a connection's path (and a registry record's path_ids): a remote
	// vWire has 6 hops, an interdomain one through proxies about 10, and a chain of a few
	// pass-through endpoints adds about 4 hops each.
	MaxPathSegments = 32

	// MaxTokenBytes bounds a path segment's token: a JWT whose x5c header carries the signer's
	// SVID chain (a leaf and maybe intermediates; one Ed25519 leaf makes a 950-byte token, an
	// RSA certificate is about 1.5 KB in base64).
	MaxTokenBytes = 16 << 10

	// MaxIDBytes bounds a connection ID, a path segment's ID and a registry record's path ID.
	// Components make UUIDs (36 bytes).
	MaxIDBytes = 256

	// MaxNameBytes bounds a network service, endpoint or path segment name before its '@domain',
	// and the domain itself: a Kubernetes object name (and a DNS name) is at most 253 bytes.
	MaxNameBytes = 253

	// MaxLabels bounds the entries of each string map of a message: a connection's labels, its
	// extra context, a mechanism's parameters, a segment's metrics, a match's selectors and
	// metadata, an endpoint's labels for one service. Kubernetes pods carry a handful of labels.
	MaxLabels = 64

	// MaxLabelKeyBytes bounds a key of those maps: the longest Kubernetes label key, a 253-byte
	// DNS prefix, '/' and a 63-byte name.
	MaxLabelKeyBytes = 317

	// MaxLabelValueBytes bounds a value of those maps other than a mechanism's parameters: room
	// for object names (253 bytes: labels carry pod and node names) and templates over them.
	MaxLabelValueBytes = 1024

	// MaxParameterBytes bounds a mechanism parameter's value: file:// URLs carry paths, and
	// Linux paths are at most 4096 bytes (PATH_MAX).
	MaxParameterBytes = 4096

	// MaxListItems bounds each list of a message that has no bound of its own: the addresses,
	// routes, neighbours, excluded prefixes and policies of an IP context, DNS configs and their
	// servers and domains, a service's matches and their routes, an endpoint's services. A
	// cluster excludes a few dozen prefixes; a client has a few routes per vWire.
	MaxListItems = 256

	// MaxURLBytes bounds an endpoint's URL: a unix socket path is at most 107 bytes, a host name
	// 253.
	MaxURLBytes = 1024

	// MaxRecordBytes bounds a registry record (a network service, an endpoint) as encoded on
	// the wire, and a Find query's template: the registry keeps every record in memory (or as a
	// Kubernetes object, etcd takes 1.5 MiB) and sends it to every watcher on each change. A
	// real record is a few hundred bytes (169 for a sandbox endpoint).
	MaxRecordBytes = 64 << 10
)

// over returns the error for seen units of field past the bound limit (the constant's name) of
// value max; unit names what is counted ("bytes", "entries").
func over(field, limit string, max, seen int, unit string) error {
	return &Error{Field: field, Problem: fmt.Sprintf("%d %s, over the limit %s = %d", seen, unit, limit, max), Limit: limit}
}

// The checks below name their field as field+sub, joined only for an error: a Request passes
// them at every hop, and joining every name up front cost it an allocation each.

// atMost checks a string's length against a bound.
func atMost(field, sub, limit string, max int, s string) error {
	if len(s) > max {
		return over(field+sub, limit, max, len(s), "bytes")
	}
	return nil
}

// count checks a list's length against a bound.
func count(field, sub, limit string, max, n int) error {
	if n > max {
		return over(field+sub, limit, max, n, "entries")
	}
	return nil
}

// stringMap checks a map's size, then its keys and values (the first over in key order); values
// are bounded by valueLimit (the name of the constant valueMax).
func stringMap(field, sub string, m map[string]string, valueLimit string, valueMax int) error {
	if err := count(field, sub, "MaxLabels", MaxLabels, len(m)); err != nil {
		return err
	}
	within := true
	for k, v := range m {
		if len(k) > MaxLabelKeyBytes || len(v) > valueMax {
			within = false
			break
		}
	}
	if within {
		return nil
	}
	field += sub
	for _, k := range slices.Sorted(maps.Keys(m)) { // the first in key order, as the package promises
		if len(k) > MaxLabelKeyBytes {
			return over(fmt.Sprintf("%s[%.64q]", field, k), "MaxLabelKeyBytes", MaxLabelKeyBytes, len(k), "bytes in the key")
		}
		if err := atMost(fmt.Sprintf("%s[%q]", field, k), "", valueLimit, valueMax, m[k]); err != nil {
			return err
		}
	}
	return nil
}

// labels checks a map of labels (selectors, metadata, extra context, metrics).
func labels(field, sub string, m map[string]string) error {
	return stringMap(field, sub, m, "MaxLabelValueBytes", MaxLabelValueBytes)
}

// recordSize checks a registry record or query template against MaxRecordBytes.
func recordSize(field string, m proto.Message) error {
	if n := proto.Size(m); n > MaxRecordBytes {
		return over(field, "MaxRecordBytes", MaxRecordBytes, n, "bytes encoded")
	}
	return nil
}

// pathIDs checks a registry record's path_ids: at most MaxPathSegments, each at most MaxIDBytes.
func pathIDs(field, sub string, ids []string) error {
	return stringList(field, sub, ids, "MaxPathSegments", MaxPathSegments, "MaxIDBytes", MaxIDBytes)
}

// names checks the bounds of a list of names (domains, addresses): at most MaxListItems, each
// at most MaxNameBytes.
func names(field, sub string, list []string) error {
	return stringList(field, sub, list, "MaxListItems", MaxListItems, "MaxNameBytes", MaxNameBytes)
}

// stringList checks a list of strings: at most countMax of them (the constant countLimit), each
// at most itemMax bytes (the constant itemLimit).
func stringList(field, sub string, list []string, countLimit string, countMax int, itemLimit string, itemMax int) error {
	if err := count(field, sub, countLimit, countMax, len(list)); err != nil {
		return err
	}
	for i, s := range list {
		if len(s) > itemMax {
			return over(fmt.Sprintf("%s%s[%d]", field, sub, i), itemLimit, itemMax, len(s), "bytes")
		}
	}
	return nil
}

// MonitorScopeSelector checks the bounds of a MonitorConnections selector, which a component
// matches against every connection it holds, for each change: at most MaxPathSegments segments
// (each held to a path's bounds) and MaxListItems network services of at most MaxNameBytes. A
// nil selector passes.
func MonitorScopeSelector(sel *networkservice.MonitorScopeSelector) error {
	const field = "monitor_scope_selector"
	if err := pathLimits(field, &networkservice.Path{PathSegments: sel.GetPathSegments()}); err != nil {
		return err
	}
	return names(field, ".network_services", sel.GetNetworkServices())
}
