package discover

// Matching a network service's matches against endpoints, as the package comment describes,
// and the label helpers it uses.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/networkservicemesh/api/pkg/api/registry"
)

// selectEndpoints applies ns's matches for a client with labels client to nses; when it finds
// nothing, why says, match by match, what was tried.
func selectEndpoints(ns *registry.NetworkService, client map[string]string, nses []*registry.NetworkServiceEndpoint) (f *found, why []string) {
	if len(ns.GetMatches()) == 0 {
		return &found{ns: ns, nses: nses}, nil
	}
	fell := false
	for i, m := range ns.GetMatches() {
		if source := Expand(m.GetSourceSelector(), client); !Selects(source, client) {
			why = append(why, fmt.Sprintf("match %d needs client labels %s", i+1, FormatLabels(source)))
			continue
		}
		f := route(ns, m, client, nses)
		if len(f.nses) > 0 {
			return f, nil
		}
		if !m.GetFallthrough() && len(m.GetRoutes()) == 0 && m.GetMetadata() != nil {
			f.nses = nses
			return f, nil
		}
		tried := fmt.Sprintf("match %d selects no endpoint by %s", i+1, routes(m, client))
		if m.GetFallthrough() {
			why, fell = append(why, tried+" and falls through"), true
			continue
		}
		return f, append(why, tried)
	}
	if fell {
		return &found{ns: ns}, append(why, "no match is left")
	}
	return &found{ns: ns}, append(why, "no match applies")
}

// route returns the endpoints m's routes select, each once, with its route's weight.
func route(ns *registry.NetworkService, m *registry.Match, client map[string]string, nses []*registry.NetworkServiceEndpoint) *found {
	f := &found{ns: ns, match: m, weights: map[string]uint32{}}
	for _, r := range m.GetRoutes() {
		want := Expand(r.GetDestinationSelector(), client)
		for _, nse := range nses {
			if _, taken := f.weights[nse.GetName()]; taken || !Selects(want, labelsOf(nse, ns.GetName())) {
				continue
			}
			f.nses = append(f.nses, nse)
			f.weights[nse.GetName()] = r.GetWeight()
		}
	}
	return f
}

// matchOf returns the match that selects nse for a client with labels client, else the first
// match that applies to the client, else nil.
func matchOf(ns *registry.NetworkService, client map[string]string, nse *registry.NetworkServiceEndpoint) *registry.Match {
	if f, _ := selectEndpoints(ns, client, []*registry.NetworkServiceEndpoint{nse}); len(f.nses) > 0 {
		return f.match
	}
	for _, m := range ns.GetMatches() {
		if Selects(Expand(m.GetSourceSelector(), client), client) {
			return m
		}
	}
	return nil
}

func labelsOf(nse *registry.NetworkServiceEndpoint, service string) map[string]string {
	return nse.GetNetworkServiceLabels()[service].GetLabels()
}

// routes describes m's destination selectors for an error message.
func routes(m *registry.Match, client map[string]string) string {
	if len(m.GetRoutes()) == 0 {
		return "routes (it has none)"
	}
	selectors := make([]string, 0, len(m.GetRoutes()))
	for _, r := range m.GetRoutes() {
		selectors = append(selectors, FormatLabels(Expand(r.GetDestinationSelector(), client)))
	}
	return "routes " + strings.Join(selectors, " or ")
}

// maxListed bounds how many endpoints an error message lists.
const maxListed = 10

func endpointLabels(service string, nses []*registry.NetworkServiceEndpoint) string {
	var b strings.Builder
	for i, nse := range nses {
		if i == maxListed {
			fmt.Fprintf(&b, " and %d more", len(nses)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", nse.GetName(), FormatLabels(labelsOf(nse, service)))
	}
	return b.String()
}

// Selects reports whether labels has every key of selector with the same value (an empty
// selector selects anything). Expand the selector's templates first.
func Selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if have, ok := labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}

// Expand returns selector with each value that is a text/template template executed over the
// client's labels. A template may only refer to labels, as {{.app}}, or {{index . "node-name"}}
// for a key that is not an identifier; a value that does anything else (its author is whoever
// registers the service: no loops, no functions), that does not parse, or that names a label
// the client does not have stays as written. Selector itself is returned when it has no
// template.
func Expand(selector, client map[string]string) map[string]string {
	var out map[string]string
	for k, v := range selector {
		if !strings.Contains(v, "{{") {
			continue
		}
		if out == nil {
			out = maps.Clone(selector)
		}
		out[k] = execute(v, client)
	}
	if out == nil {
		return selector
	}
	return out
}

func execute(text string, client map[string]string) string {
	t, err := template.New("selector").Option("missingkey=error").Parse(text)
	if err != nil || !onlyLabels(t.Root) {
		return text
	}
	var b strings.Builder
	if err := t.Execute(&b, client); err != nil {
		return text
	}
	return b.String()
}

// FormatLabels writes labels as {key=value, ...}, sorted by key, for messages.
func FormatLabels(labels map[string]string) string {
	pairs := make([]string, 0, len(labels))
	for k, v := range labels {
		pairs = append(pairs, k+"="+v)
	}
	slices.Sort(pairs)
	return "{" + strings.Join(pairs, ", ") + "}"
}

// onlyLabels tells whether a template's tree is text and label references only.
func onlyLabels(root *parse.ListNode) bool {
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || !labelRef(n.Pipe.Cmds[0].Args) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// labelRef tells whether args are .key or index . "key".
func labelRef(args []parse.Node) bool {
	switch len(args) {
	case 1:
		field, ok := args[0].(*parse.FieldNode)
		return ok && len(field.Ident) == 1
	case 3:
		fn, ok := args[0].(*parse.IdentifierNode)
		_, dot := args[1].(*parse.DotNode)
		_, key := args[2].(*parse.StringNode)
		return ok && fn.Ident == "index" && dot && key
	}
	return false
}
