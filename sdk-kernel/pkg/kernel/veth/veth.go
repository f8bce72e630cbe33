// Package veth builds the kernel side of a vWire: a veth pair with one end in the workload's
// network namespace, named as the workload asked and configured from the connection, and the
// other end in the forwarder's namespace, to be cross-connected.
//
// Why: the KERNEL mechanism gives a workload (NSC or NSE) an interface of its own. The pair is
// made in one netlink call with its workload end born in the workload's namespace under its
// final name, so there is no moment where that end sits in the forwarder's namespace or under a
// temporary name (NSM makes it in the forwarder, then moves and renames it: three steps that can
// each fail or collide). The forwarder's end is named from the connection ID (PeerName), unique
// per connection and stable across restarts, so a restarted forwarder finds it again.
//
// Create, in order: checks the whole Spec (InvalidArgument for a bad field, AlreadyExists when a
// name is taken, before anything is made); makes the pair with the MTU on both ends and the
// workload end's MAC: for ETHERNET payload the EthernetContext's (client: src_mac, endpoint:
// dst_mac), otherwise, or when it has none, one derived from the connection ID and the side, the
// same each time the vWire is made again; sets both ends up; applies the IPContext to the workload end (see ipconfig). The
// ends go up before the addresses go on: an IPv6 address added to a link that is not yet up
// stays unusable until IPv6 sees the link ready, which costs the first packets a second or two
// of neighbour discovery retries. A failure at any step removes everything made before it. A
// second Create for the same connection ID is AlreadyExists: on a refresh, keep what the first
// made, or Delete it first.
//
// The workload's end carries the alias "vwire:<connection ID>" (Alias), which tells a vWire from
// the workload's other interfaces: a client that restarts after a crash, in the same namespace,
// finds the vWires its previous run left under the names it asks for, and removes them
// (RemoveLeftover) before asking again.
//
// Adopt is for a forwarder that restarted: it keeps the pair its previous run made for the
// same Spec when both ends are there, up, peers, in the namespaces given and as the Spec asks
// (alias, name, MTU, MAC, addresses), changing nothing that carries traffic, and removes a pair of
// that connection that differs, so that Create can make it anew.
//
// Delete removes the pair (which takes the addresses, routes and neighbours with it) and the
// policy rules ipconfig added, skips what is gone, and so can be repeated or run after a restart
// with only the Spec. If the workload's namespace is gone, its end died with it: pass a closed
// handle (netns.None()) and only the forwarder's side is cleaned.
package veth

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"net"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/api/validate"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
)

// Spec is one vWire's kernel side, as the connection describes it.
type Spec struct {
	ConnID   string                          // the connection's ID; names the forwarder's end
	Name     string                          // the interface name in the workload (at most 15 bytes)
	MTU      int                             // 0: the kernel's default (1500)
	Side     ipconfig.Side                   // which end of the connection the workload is
	Payload  string                          // payload.IP (or "") or payload.Ethernet
	IP       *networkservice.IPContext       // may be nil
	Ethernet *networkservice.EthernetContext // used for ETHERNET payload only; may be nil
}

// PeerName is the name of the forwarder's end for connection connID: "vw" and 13 characters of
// the connection ID's hash, 15 bytes.
func PeerName(connID string) string {
	sum := sha256.Sum256([]byte(connID))
	return "vw" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:13]
}

// derivedMAC is the workload end's MAC when the Ethernet context gives none: locally
// administered, unicast, from the connection ID and the side. A vWire made again for the same
// connection (a forwarder restarted) has the MAC it had, so the other side's neighbour cache
// stays right; with a new random one, frames would go to the old MAC until that entry expired,
// half a minute and more when the other side's vWire outlived the restart.
func (s *Spec) derivedMAC() net.HardwareAddr {
	sum := sha256.Sum256([]byte(s.ConnID + "/" + s.Side.String()))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// check returns the workload end's MAC or the first problem of s.
func (s *Spec) check() (net.HardwareAddr, error) {
	if s.ConnID == "" {
		return nil, kerr.New(codes.InvalidArgument, "veth: no connection ID; the forwarder's end is named after it")
	}
	if err := validate.InterfaceName(s.Name); err != nil {
		return nil, kerr.New(codes.InvalidArgument, "veth: %v", err)
	}
	if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
		return nil, kerr.New(codes.InvalidArgument, "veth: MTU %d is outside 68..65535", s.MTU)
	}
	if err := ipconfig.Check(s.IP); err != nil {
		return nil, err
	}
	switch s.Payload {
	case "", payload.IP:
		return s.derivedMAC(), nil
	case payload.Ethernet:
	default:
		return nil, kerr.New(codes.InvalidArgument, "veth: payload %q; want %s or %s", s.Payload, payload.IP, payload.Ethernet)
	}
	field, mac := "src_mac", s.Ethernet.GetSrcMac()
	if s.Side == ipconfig.Endpoint {
		field, mac = "dst_mac", s.Ethernet.GetDstMac()
	}
	if mac == "" {
		return s.derivedMAC(), nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
		return nil, kerr.New(codes.InvalidArgument, "veth: ethernet_context.%s %q is not a unicast Ethernet MAC address", field, mac)
	}
	return hw, nil
}

// Create makes the vWire of s between the forwarder's namespace fwd and the workload's
// namespace, and returns the name of the forwarder's end (PeerName(s.ConnID)).
func Create(fwd, workload netns.NsHandle, s Spec) (string, error) {
	mac, err := s.check()
	if err != nil {
		return "", err
	}
	peer := PeerName(s.ConnID)
	hf, hw, err := handles(fwd, workload)
	if err != nil {
		return "", err
	}
	defer hf.Close()
	defer hw.Close()
	for _, taken := range []struct {
		h     *netlink.Handle
		name  string
		where string
	}{{hw, s.Name, "the workload's"}, {hf, peer, "the forwarder's"}} {
		if _, err := taken.h.LinkByName(taken.name); err == nil {
			return "", kerr.New(codes.AlreadyExists, "veth: interface %q already exists in %s namespace; pick another name or delete it", taken.name, taken.where)
		}
	}
	attrs := netlink.NewLinkAttrs() // TxQLen -1: the kernel's default queue length
	attrs.Name, attrs.MTU = peer, s.MTU
	pair := &netlink.Veth{
		LinkAttrs:  attrs,
		PeerTxQLen: -1,
		// The workload's end takes its name only once it carries its alias: a client that
		// restarts meanwhile finds no interface of its name that looks like its own.
		PeerName:         peer,
		PeerNamespace:    netlink.NsFd(workload),
		PeerMTU:          uint32(s.MTU),
		PeerHardwareAddr: mac,
	}
	if err := hf.LinkAdd(pair); err != nil {
		return "", kerr.Wrap(err, "veth: add pair %q (forwarder) / %q (workload)", peer, s.Name)
	}
	err = name(hw, peer, s)
	if err == nil {
		err = configure(hf, hw, workload, peer, s)
	}
	if err != nil {
		if derr := hf.LinkDel(pair); derr != nil && !kerr.Missing(derr) {
			err = errors.Join(err, kerr.Wrap(derr, "veth: undo: delete %q", peer))
		}
		return "", err
	}
	return peer, nil
}

// Adopt keeps the vWire of s that a previous run of the forwarder made between fwd and the
// workload's namespace, if it is there and is what s asks for, and reports whether it did:
// both ends up, peers of each other, the workload's end in this namespace under s.Name with the
// alias of s.ConnID, the MTU and MAC of s, and the addresses of s's IP context (ipconfig.Adopt,
// which adds what is missing of it). It changes nothing that passes traffic: no end goes down,
// no address or route is replaced; the forwarder's end goes back to the default link group,
// out of ifname's leftovers. A vWire of s.ConnID that is not what s asks for (another
// namespace, name, MTU, MAC or addresses) is deleted, and Adopt reports false: Create it anew.
func Adopt(fwd, workload netns.NsHandle, s Spec) (bool, error) {
	mac, err := s.check()
	if err != nil {
		return false, err
	}
	peer := PeerName(s.ConnID)
	hf, hw, err := handles(fwd, workload)
	if err != nil {
		return false, err
	}
	defer hf.Close()
	defer hw.Close()
	fl, err := hf.LinkByName(peer)
	if kerr.Missing(err) {
		return false, nil
	}
	if err != nil {
		return false, kerr.Wrap(err, "veth: find %q", peer)
	}
	wl, err := hw.LinkByName(s.Name)
	if err != nil && !kerr.Missing(err) {
		return false, kerr.Wrap(err, "veth: find %q in the workload's namespace", s.Name)
	}
	if wl == nil || !s.matches(fl, wl, mac) {
		return false, drop(hf, fl, workload, wl, s)
	}
	if err := hf.LinkSetGroup(fl, 0); err != nil {
		return false, kerr.Wrap(err, "veth: adopt %q (default link group)", peer)
	}
	kept, err := ipconfig.Adopt(workload, s.Name, s.Side, s.IP, s.ConnID)
	if err != nil || !kept {
		return false, errors.Join(err, drop(hf, fl, workload, wl, s))
	}
	return true, nil
}

// matches reports whether fl (forwarder) and wl (workload) are the pair Create makes for s,
// with mac on the workload's end.
func (s *Spec) matches(fl, wl netlink.Link, mac net.HardwareAddr) bool {
	if _, ok := fl.(*netlink.Veth); !ok {
		return false
	}
	fa, wa := fl.Attrs(), wl.Attrs()
	mtu := s.MTU
	if mtu == 0 {
		mtu = 1500
	}
	return wa.Alias == Alias(s.ConnID) && fa.ParentIndex == wa.Index && wa.ParentIndex == fa.Index &&
		fa.MTU == mtu && wa.MTU == mtu && wa.HardwareAddr.String() == mac.String() &&
		fa.Flags&net.FlagUp != 0 && wa.Flags&net.FlagUp != 0
}

// drop deletes the vWire of s that Adopt found but cannot keep: the forwarder's end fl (and
// with it the pair), and the policy rules of s in the workload's namespace when its end wl is
// this vWire's.
func drop(hf *netlink.Handle, fl netlink.Link, workload netns.NsHandle, wl netlink.Link, s Spec) error {
	var errs []error
	if wl != nil && wl.Attrs().Alias == Alias(s.ConnID) {
		if err := ipconfig.Remove(workload, s.Name, s.Side, s.IP, s.ConnID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := hf.LinkDel(fl); err != nil && !kerr.Missing(err) {
		errs = append(errs, kerr.Wrap(err, "veth: delete %q, left by a previous run and not what the connection asks for", fl.Attrs().Name))
	}
	return errors.Join(errs...)
}

// configure sets both ends up and applies the IP context to the workload's end.
func configure(hf, hw *netlink.Handle, workload netns.NsHandle, peer string, s Spec) error {
	if err := setUp(hf, peer); err != nil {
		return err
	}
	if err := setUp(hw, s.Name); err != nil {
		return err
	}
	return ipconfig.Apply(workload, s.Name, s.Side, s.IP, s.ConnID)
}

// name gives the workload's end, made under the name temp, its alias and then the name of s.
func name(hw *netlink.Handle, temp string, s Spec) error {
	end, err := hw.LinkByName(temp)
	if err != nil {
		return kerr.Wrap(err, "veth: find the workload's end %q", temp)
	}
	if err := hw.LinkSetAlias(end, Alias(s.ConnID)); err != nil {
		return kerr.Wrap(err, "veth: set the alias of %q", temp)
	}
	if err := hw.LinkSetName(end, s.Name); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return kerr.New(codes.AlreadyExists, "veth: interface %q appeared in the workload's namespace while its vWire was made; pick another name or delete it", s.Name)
		}
		return kerr.Wrap(err, "veth: name the workload's end %q", s.Name)
	}
	return nil
}

// aliasPrefix starts the alias of every workload end of a vWire.
const aliasPrefix = "vwire:"

// Alias is the alias of the workload's end of connection connID's vWire.
func Alias(connID string) string { return aliasPrefix + connID }

// RemoveLeftover removes the interface name from the workload's namespace if it is the
// workload's end of a vWire (its alias says so), and says whether there was one. An interface of
// that name that is not a vWire is AlreadyExists, and stays: it is the workload's own.
func RemoveLeftover(workload netns.NsHandle, name string) (bool, error) {
	h, err := netlink.NewHandleAt(workload, unix.NETLINK_ROUTE)
	if err != nil {
		return false, kerr.Wrap(err, "veth: open netlink in the workload's namespace")
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if kerr.Missing(err) {
		return false, nil
	}
	if err != nil {
		return false, kerr.Wrap(err, "veth: find %q", name)
	}
	if !strings.HasPrefix(link.Attrs().Alias, aliasPrefix) {
		return false, kerr.New(codes.AlreadyExists, "veth: interface %q exists in the workload's namespace and is not a vWire; ask for another name", name)
	}
	if err := h.LinkDel(link); err != nil && !kerr.Missing(err) {
		return false, kerr.Wrap(err, "veth: delete the vWire %q (%s) a previous run left", name, link.Attrs().Alias)
	}
	return true, nil
}

func setUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return kerr.Wrap(err, "veth: find %q", name)
	}
	return kerr.Wrap(h.LinkSetUp(link), "veth: set %q up", name)
}

// Delete removes the vWire of s: the pair, and the rules of its policies in the workload's
// namespace. What is gone already is skipped.
func Delete(fwd, workload netns.NsHandle, s Spec) error {
	if _, err := s.check(); err != nil {
		return err
	}
	hf, err := netlink.NewHandleAt(fwd, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "veth: open netlink in the forwarder's namespace")
	}
	defer hf.Close()
	var errs []error
	if workload.IsOpen() {
		if err := ipconfig.Remove(workload, s.Name, s.Side, s.IP, s.ConnID); err != nil {
			errs = append(errs, err)
		}
	}
	peer := PeerName(s.ConnID)
	link, err := hf.LinkByName(peer)
	if err == nil {
		err = hf.LinkDel(link)
	}
	if err != nil && !kerr.Missing(err) {
		errs = append(errs, kerr.Wrap(err, "veth: delete %q", peer))
	}
	return errors.Join(errs...)
}

func handles(fwd, workload netns.NsHandle) (hf, hw *netlink.Handle, err error) {
	hf, err = netlink.NewHandleAt(fwd, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, kerr.Wrap(err, "veth: open netlink in the forwarder's namespace")
	}
	hw, err = netlink.NewHandleAt(workload, unix.NETLINK_ROUTE)
	if err != nil {
		hf.Close()
		return nil, nil, kerr.Wrap(err, "veth: open netlink in the workload's namespace")
	}
	return hf, hw, nil
}
