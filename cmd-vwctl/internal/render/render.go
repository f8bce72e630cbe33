// Package render writes what vwctl found as a table for a person or as JSON for a program.
//
// Why: the same results go to an operator's terminal and to scripts; keeping the layout here
// keeps the commands' code about finding things, and lets golden files (testdata/*.golden) pin
// both forms.
//
// What callers rely on: output depends only on the values given and now (times are shown
// relative to it), so the same inputs give the same bytes; JSON keeps the field names of the
// inspect and check types; a table has one header line and one line per item, columns
// separated by at least two spaces; an empty list prints the header and a line saying so.
package render

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"vwire.dev/cmd-vwctl/internal/check"
	"vwire.dev/cmd-vwctl/internal/inspect"
)

// Format is how results are written.
type Format string

// The formats -o takes.
const (
	Table Format = "table"
	JSON  Format = "json"
)

// ParseFormat returns the format named s, or an error listing those there are.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Table, JSON:
		return f, nil
	}
	return "", fmt.Errorf("output format %q is not known; use -o table or -o json", s)
}

// writeJSON writes v indented, with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under header, aligned.
func table(w io.Writer, header []string, rows [][]string, empty string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, empty)
	}
	return tw.Flush()
}

// or returns s, or "-" when s is empty, so that no table cell is blank.
func or(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// list joins s with commas, "-" when empty.
func list(s []string) string { return or(strings.Join(s, ",")) }

// until says how long from now t is, rounded to the second: "9m58s", or "expired 3s ago".
func until(t, now time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		return "expired " + (-d).String() + " ago"
	}
	return d.String()
}

// Connections writes conns.
func Connections(w io.Writer, f Format, conns []inspect.Connection, now time.Time) error {
	if f == JSON {
		if conns == nil {
			conns = []inspect.Connection{}
		}
		return writeJSON(w, conns)
	}
	rows := make([][]string, 0, len(conns))
	for _, c := range conns {
		rows = append(rows, []string{c.ID, or(c.Client), or(c.Service), or(c.Endpoint), or(c.Mechanism), or(c.Interface),
			list(c.ClientAddrs), list(c.EndpointAddrs), or(c.State), until(c.Expires, now)})
	}
	return table(w, []string{"ID", "CLIENT", "SERVICE", "ENDPOINT", "MECHANISM", "INTERFACE", "CLIENT ADDRESSES", "ENDPOINT ADDRESSES", "STATE", "EXPIRES IN"},
		rows, "(no connections)")
}

// Path writes p: each hop, then the verdict.
func Path(w io.Writer, f Format, p *inspect.Path) error {
	if f == JSON {
		return writeJSON(w, p)
	}
	fmt.Fprintf(w, "connection %s, service %s\n", p.ID, or(p.Service))
	rows := make([][]string, 0, len(p.Hops))
	for _, h := range p.Hops {
		var mech, iface string
		if h.View != nil {
			mech, iface = h.View.Mechanism, h.View.Interface
		}
		rows = append(rows, []string{fmt.Sprint(h.Index), h.Name, h.Role, h.State, or(mech), or(iface), or(h.URL)})
	}
	if err := table(w, []string{"#", "HOP", "ROLE", "STATE", "MECHANISM", "INTERFACE", "URL"}, rows, "(no hops)"); err != nil {
		return err
	}
	for _, h := range p.Hops {
		if h.Error != "" && h.Index != p.Broken {
			fmt.Fprintf(w, "hop %d, %s: %s\n", h.Index, h.Name, h.Error)
		}
	}
	if p.Broken < 0 {
		_, err := fmt.Fprintln(w, "every hop that shows the connection holds it UP")
		return err
	}
	h := p.Hops[p.Broken]
	msg := fmt.Sprintf("broken at hop %d, %s (%s): %s", h.Index, h.Name, h.Role, h.State)
	if h.Error != "" {
		msg += ": " + h.Error
	}
	_, err := fmt.Fprintln(w, msg)
	return err
}

// protoList returns records as JSON values in protojson's mapping (the registry API's field
// names); the encoder compacts and indents them, so protojson's varying spaces do not show.
func protoList[M proto.Message](records []M) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(records))
	for _, r := range records {
		b, err := protojson.Marshal(r)
		if err != nil {
			b, _ = json.Marshal(err.Error())
		}
		out = append(out, b)
	}
	return out
}

// Services writes the registry's services.
func Services(w io.Writer, f Format, nss []*registry.NetworkService) error {
	if f == JSON {
		return writeJSON(w, protoList(nss))
	}
	rows := make([][]string, 0, len(nss))
	for _, ns := range nss {
		rows = append(rows, []string{ns.GetName(), or(ns.GetPayload()), fmt.Sprint(len(ns.GetMatches()))})
	}
	return table(w, []string{"NAME", "PAYLOAD", "MATCHES"}, rows, "(no services)")
}

// Endpoints writes the registry's endpoints.
func Endpoints(w io.Writer, f Format, nses []*registry.NetworkServiceEndpoint, now time.Time) error {
	if f == JSON {
		return writeJSON(w, protoList(nses))
	}
	rows := make([][]string, 0, len(nses))
	for _, nse := range nses {
		var labels []string
		for svc, l := range nse.GetNetworkServiceLabels() {
			for k, v := range l.GetLabels() {
				labels = append(labels, svc+":"+k+"="+v)
			}
		}
		sort.Strings(labels)
		var expires time.Time
		if e := nse.GetExpirationTime(); e != nil {
			expires = e.AsTime()
		}
		rows = append(rows, []string{nse.GetName(), list(nse.GetNetworkServiceNames()), or(nse.GetUrl()), list(labels), until(expires, now)})
	}
	return table(w, []string{"NAME", "SERVICES", "URL", "LABELS", "EXPIRES IN"}, rows, "(no endpoints)")
}

// Checks writes the results of vwctl check.
func Checks(w io.Writer, f Format, results []check.Result) error {
	if f == JSON {
		if results == nil {
			results = []check.Result{}
		}
		return writeJSON(w, results)
	}
	rows := make([][]string, 0, len(results))
	for _, r := range results {
		verdict := "PASS"
		if r.Error != "" {
			verdict = "FAIL: " + r.Error
		}
		rows = append(rows, []string{r.ID, or(r.Client), or(r.Service), or(r.Interface), or(r.Address), verdict})
	}
	return table(w, []string{"ID", "CLIENT", "SERVICE", "INTERFACE", "ENDPOINT ADDRESS", "RESULT"}, rows, "(no vWires with a client on this node)")
}
