// Package check pings across the vWires of a node: from each local client's network namespace
// to the endpoint's addresses, and says which fail.
//
// Why: a connection UP at every hop may still carry nothing (a route or an address gone, a
// tunnel whose peer moved); only traffic shows that. vwctl runs it as root on the node, where
// the clients' namespaces are.
//
// The client's namespace is named in the connection's kernel mechanism (kernel.NetNSURL): an
// inode://<device>/<inode> URL when the client passed it by descriptor, as vwire's and NSM's
// clients do; Namespaces finds the file of the node that is that namespace (under /run/netns
// and /proc/<pid>/ns/net). A file:// URL is opened as it is.
//
// What callers rely on: Run pings every (connection, address) pair at once, each as
// `ping -c 1 -W 1` with two retries (sdk-kernel/pkg/kernel/ping), and returns one Result per
// pair in the order of its input; nothing on the node is changed.
package check

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/vishvananda/netns"

	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk/pkg/tools/fdpass"

	"vwire.dev/cmd-vwctl/internal/inspect"
)

// Result is the outcome of pinging one endpoint address across one vWire.
type Result struct {
	ID        string `json:"id"`
	Client    string `json:"client"`
	Service   string `json:"service"`
	Interface string `json:"interface"`
	NetNS     string `json:"netns"`
	Address   string `json:"address"`
	// Error says why the ping failed; empty when it passed.
	Error string `json:"error,omitempty"`
}

// Pinger pings dst from inside ns (ping.Ping).
type Pinger func(ns netns.NsHandle, dst netip.Addr) error

// Namespaces returns the network namespace files of the node by inode URL: those named under
// each of dirs (/run/netns for `ip netns`), then each process's (/proc/<pid>/ns/net), the first
// file found for each namespace. Files that vanish while it looks are skipped.
func Namespaces(proc string, dirs ...string) map[string]string {
	var files []string
	for _, d := range dirs {
		names, _ := filepath.Glob(filepath.Join(d, "*"))
		files = append(files, names...)
	}
	pids, _ := filepath.Glob(filepath.Join(proc, "[0-9]*", "ns", "net"))
	files = append(files, pids...)
	out := map[string]string{}
	for _, f := range files {
		u, err := fdpass.PathURL(f)
		if err != nil {
			continue
		}
		if _, ok := out[u]; !ok {
			out[u] = f
		}
	}
	return out
}

// Run pings across each connection whose client is on this node (the connection's first hop
// after the client is the asked nsmgr) and names its namespace in a KERNEL mechanism; files
// maps inode URLs to namespace files (Namespaces).
func Run(conns []inspect.Connection, files map[string]string, ping Pinger) []Result {
	var results []Result
	var targets []netip.Addr
	for _, c := range conns {
		if c.PathIndex != 1 || c.Mechanism != kernel.MECHANISM {
			continue // not a local client's vWire: its client is on another node
		}
		base := Result{ID: c.ID, Client: c.Client, Service: c.Service, Interface: c.Interface, NetNS: c.NetNS}
		if len(c.EndpointAddrs) == 0 {
			base.Error = "the connection has no endpoint address to ping (its IP context is empty)"
			results, targets = append(results, base), append(targets, netip.Addr{})
			continue
		}
		for _, a := range c.EndpointAddrs {
			r := base
			r.Address = a
			addr, err := parseAddr(a)
			if err != nil {
				r.Error = err.Error()
			}
			results, targets = append(results, r), append(targets, addr)
		}
	}
	var wg sync.WaitGroup
	for i := range results {
		if results[i].Error != "" {
			continue
		}
		wg.Go(func() {
			if err := pingFrom(results[i].NetNS, files, targets[i], ping); err != nil {
				results[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return results
}

// parseAddr reads an address of an IP context: a prefix (10.0.0.1/32) or a bare address.
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("endpoint address %q is not an IP address or prefix", s)
	}
	return a, nil
}

// pingFrom opens the namespace u names and pings dst from there.
func pingFrom(u string, files map[string]string, dst netip.Addr, ping Pinger) error {
	file := u
	if fdpass.IsURL(u) {
		f, ok := files[u]
		if !ok {
			return fmt.Errorf("the client's network namespace %s is not on this node (no file under /run/netns or /proc/*/ns/net is it): run vwctl check as root on the client's node", u)
		}
		file = "file://" + f
	} else if !strings.HasPrefix(u, "file://") {
		return fmt.Errorf("the connection names no client network namespace (netnsURL %q)", u)
	}
	ns, err := nsfile.Open(file)
	if err != nil {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%w (vwctl check runs as root)", err)
		}
		return err
	}
	defer ns.Close()
	if err := ping(ns, dst); err != nil {
		return err // ping.Ping names the address
	}
	return nil
}
