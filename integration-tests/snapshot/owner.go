package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// roles are every role ifname names a connection's interfaces by.
var roles = []string{ifname.Client, ifname.Endpoint, ifname.ClientTunnel, ifname.EndpointTunnel}

// Ownership names the interfaces of live connections, and of every other connection a
// component still reports (to say whose a leftover is).
type Ownership struct {
	live  map[string]string // interface name or alias -> the connection, in words
	known map[string]string
}

// NewOwnership is an empty Ownership: nothing is owned.
func NewOwnership() *Ownership {
	return &Ownership{live: map[string]string{}, known: map[string]string{}}
}

// Add records conn's path. Live: a live client holds it, and its interfaces are owned.
// Otherwise its interfaces are only named in findings.
func (o *Ownership) Add(conn *networkservice.Connection, live bool) {
	var ids []string
	for _, seg := range conn.GetPath().GetPathSegments() {
		ids = append(ids, seg.GetId())
	}
	o.add(Describe(conn), live, ids...)
}

// AddIDs records the interfaces a live connection has under each of the IDs (its hops' IDs),
// when its path is not known.
func (o *Ownership) AddIDs(ids ...string) {
	for _, id := range ids {
		o.add("connection "+id, true, id)
	}
}

// add records the interfaces every role of each hop ID names: ifname's name, the vWire's alias.
func (o *Ownership) add(desc string, live bool, ids ...string) {
	for _, id := range ids {
		for _, role := range roles {
			for _, key := range []string{ifname.Name(id, role), AliasPrefix + ifname.ID(id, role)} {
				o.known[key] = desc
				if live {
					o.live[key] = desc
				}
			}
		}
	}
}

// owns tells whether a live connection owns the interface.
func (o *Ownership) owns(l Link) bool {
	_, byName := o.live[l.Name]
	_, byAlias := o.live[l.Alias]
	return byName || byAlias
}

// whose says which connection an interface belongs to, as far as anyone reports it.
func (o *Ownership) whose(l Link) string {
	for _, key := range []string{l.Name, l.Alias} {
		if d, ok := o.known[key]; ok {
			return d
		}
	}
	if id, ok := strings.CutPrefix(l.Alias, AliasPrefix); ok {
		return fmt.Sprintf("connection %s (by its alias; no component reports it)", id)
	}
	return "a connection no component reports (by ifname's name rule)"
}

// Describe names a connection by its path: the hops and the first hop's connection ID.
func Describe(conn *networkservice.Connection) string {
	var hops []string
	for _, seg := range conn.GetPath().GetPathSegments() {
		hops = append(hops, seg.GetName())
	}
	first := conn.GetId()
	if segs := conn.GetPath().GetPathSegments(); len(segs) > 0 {
		first = segs[0].GetId()
	}
	return fmt.Sprintf("connection %s (%s)", first, strings.Join(hops, " > "))
}

// Connections returns the connections the server at the unix socket holds, from its
// MonitorConnections' first event, asking with the identity files of identityDir (mutual TLS;
// a server shows a peer the connections its SPIFFE ID takes part in, so a component's own
// identity sees all of its own), or without TLS when identityDir is "".
func Connections(ctx context.Context, socket, identityDir string) ([]*networkservice.Connection, error) {
	id, err := spiffe.Config{IdentityDir: identityDir, Insecure: identityDir == ""}.Load(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = id.Close() }()
	opts := id.DialOptions()
	if id.Insecure() {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient("unix://"+socket, opts...)
	if err != nil {
		return nil, fmt.Errorf("snapshot: dial %s: %w", socket, err)
	}
	defer func() { _ = cc.Close() }()
	seen, err := monitor.Snapshot(ctx, cc, &networkservice.MonitorScopeSelector{})
	if err != nil {
		return nil, fmt.Errorf("snapshot: MonitorConnections of %s: %w", socket, err)
	}
	var conns []*networkservice.Connection
	for _, c := range seen {
		conns = append(conns, c)
	}
	slices.SortFunc(conns, func(a, b *networkservice.Connection) int { return strings.Compare(a.GetId(), b.GetId()) })
	return conns, nil
}

// IdentityDir returns dir when it holds identity files, else "" (a mesh without identities).
func IdentityDir(dir string) string {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return ""
	}
	return dir
}

// Finding is one object that should not be there, and why.
type Finding struct {
	Object Object
	Why    string
	// Owner is the dead connection the object belongs to, in words; Link is its interface
	// there (Netns, Name). Both empty when no connection explains the object.
	Owner string
	Link  Link
}

func (f Finding) String() string { return f.Object.String() + ": " + f.Why }

// Diff returns what now holds that it should not: objects that point at something gone;
// objects of connection interfaces (ifname's names, vWire aliases) that no live connection in
// owned owns; and other objects that base (the mesh as it came up) did not hold.
func Diff(base, now *Snapshot, owned *Ownership) []Finding {
	inBase := map[string]bool{}
	for _, o := range base.Objects {
		inBase[o.key()] = true
	}
	links := map[string]Link{} // netns + name, and "\x00" + name for sockets
	for _, l := range now.Links {
		links[l.Netns+"\x00"+l.Name] = l
		if _, dup := links["\x00"+l.Name]; !dup {
			links["\x00"+l.Name] = l
		}
	}
	var found []Finding
	for _, o := range now.Objects {
		if o.Broken != "" {
			found = append(found, Finding{Object: o, Why: o.Broken})
			continue
		}
		var foreign []Link // connection interfaces no live connection owns
		tied := false
		for _, name := range o.Links {
			l, ok := links[o.Netns+"\x00"+name]
			if !ok || !l.ofConnection() {
				continue
			}
			tied = true
			if !owned.owns(l) {
				foreign = append(foreign, l)
			}
		}
		switch {
		case len(foreign) > 0:
			l := foreign[0]
			where := ""
			if l.Netns != o.Netns {
				where = " in " + l.Netns
			}
			owner := owned.whose(l)
			found = append(found, Finding{Object: o, Owner: owner, Link: l,
				Why: fmt.Sprintf("it belongs to interface %s%s, of %s, which no live client holds", l.Name, where, owner)})
		case tied:
		case o.Kind == "socket" && len(o.Links) > 0:
			// A WireGuard socket whose device is in none of the namespaces: not the mesh's.
		case !inBase[o.key()]:
			found = append(found, Finding{Object: o, Why: "it is new since the mesh came up and belongs to no connection"})
		}
	}
	return found
}

// Report is findings in short: per dead connection, the interfaces it left with how many objects
// of each kind hang on them; then every other finding on a line of its own.
func Report(found []Finding) string {
	if len(found) == 0 {
		return "nothing extra"
	}
	type iface struct{ netns, name string }
	byOwner := map[string]map[iface]map[string]int{}
	describe := map[iface]string{}
	var owners []string
	var others []string
	for _, f := range found {
		if f.Owner == "" {
			others = append(others, "  "+f.String())
			continue
		}
		if byOwner[f.Owner] == nil {
			byOwner[f.Owner] = map[iface]map[string]int{}
			owners = append(owners, f.Owner)
		}
		i := iface{f.Link.Netns, f.Link.Name}
		if byOwner[f.Owner][i] == nil {
			byOwner[f.Owner][i] = map[string]int{}
			describe[i] = f.Link.Kind + " " + f.Link.Name
		}
		byOwner[f.Owner][i][f.Object.Kind]++
	}
	slices.Sort(owners)
	var b strings.Builder
	fmt.Fprintf(&b, "%d objects extra", len(found))
	if len(owners) > 0 {
		fmt.Fprintf(&b, "; %d connections that no live client holds left interfaces:\n", len(owners))
	} else {
		b.WriteString(":\n")
	}
	for _, owner := range owners {
		fmt.Fprintf(&b, "  %s:\n", owner)
		ifaces := make([]iface, 0, len(byOwner[owner]))
		for i := range byOwner[owner] {
			ifaces = append(ifaces, i)
		}
		slices.SortFunc(ifaces, func(a, b iface) int { return strings.Compare(a.netns+a.name, b.netns+b.name) })
		for _, i := range ifaces {
			var kinds []string
			for kind, n := range byOwner[owner][i] {
				kinds = append(kinds, fmt.Sprintf("%d %s", n, kind))
			}
			slices.Sort(kinds)
			fmt.Fprintf(&b, "    %s: %s, with %s\n", i.netns, describe[i], strings.Join(kinds, ", "))
		}
	}
	for _, line := range others {
		b.WriteString(line + "\n")
	}
	return b.String()
}

// Lines is every finding on a line of its own.
func Lines(found []Finding) string {
	var b strings.Builder
	for _, f := range found {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}
