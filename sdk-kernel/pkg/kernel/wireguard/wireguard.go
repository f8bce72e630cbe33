// Package wireguard makes a WireGuard interface in a network namespace and configures it, with
// the kernel's WireGuard where the kernel has it and with wireguard-go on a TUN device where it
// does not.
//
// Why: WireGuard is NSM's default remote mechanism for IP payload. Each forwarder has one
// interface per connection (or per peer) with its own private key and listen port and the remote
// forwarder as its peer. Configuration goes through wgctrl in both cases, so callers write one
// wgtypes.Config (keys from wgtypes.GeneratePrivateKey and Key.PublicKey) whatever runs below.
//
// wireguard-go in a namespace: New opens the TUN device from inside the namespace (nsfile.Do),
// so the interface is born there, and hands wireguard-go a UDP bind whose sockets are opened
// there too, whichever goroutine asks; its MTU lookups run there as well. Its UAPI socket is
// /var/run/wireguard/<name>.sock, where wgctrl (and wg(8)) look for it. That directory is shared
// by all namespaces, so a name must be unique across them: a second device of a name whose
// socket answers is AlreadyExists.
//
// Guarantees: New returns an interface that is up, and for wireguard-go one whose UDP sockets
// are open (wireguard-go goes up on its own goroutine; New waits for it), or an error and
// nothing left (no interface, no socket). Configure returns once the configuration, a new
// listen port included, is in force. Close stops wireguard-go, closes the UAPI socket and
// removes its file, or deletes the kernel interface, and can be repeated. When Close returns,
// the interface is gone and the goroutines of this package have returned; wireguard-go's own
// workers see their queues closed and return a moment later (it offers no way to wait for
// them), so a logger given WithLogger may get their last debug lines after Close. An interface
// removed behind the Device's back makes Close skip it.
package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"

	"vwire.dev/api/validate"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// SocketDir holds the UAPI sockets of wireguard-go devices, where wgctrl and wg(8) look.
const SocketDir = "/var/run/wireguard"

// DefaultMTU leaves room for WireGuard's 80 bytes of headers over an IPv6 underlay of 1500.
const DefaultMTU = 1420

// Option changes how New makes a device.
type Option func(*options)

type options struct {
	mtu       int
	userspace bool
	logger    *slog.Logger
}

// WithMTU sets the interface's MTU: 1280 (IPv6's minimum) to 65535; 0 means DefaultMTU.
func WithMTU(mtu int) Option { return func(o *options) { o.mtu = mtu } }

// WithUserspace uses wireguard-go even where the kernel has WireGuard.
func WithUserspace() Option { return func(o *options) { o.userspace = true } }

// WithLogger sends wireguard-go's messages to l: its errors at Error, the rest at Debug.
// Without it they are dropped.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Device is a WireGuard interface in a network namespace.
type Device struct {
	name   string
	ns     netns.NsHandle // our own copy, closed by Close
	kernel bool

	// wireguard-go only
	dev      *device.Device
	bind     *nsBind
	listener *net.UnixListener
	running  sync.WaitGroup // the UAPI accept loop and its handlers

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open UAPI connections, closed by Close
	closed bool
	err    error // of the first Close
}

// New makes WireGuard interface name (at most 15 bytes, unique across namespaces) in namespace
// ns and sets it up. It has no key, port or peer until Configure.
func New(ns netns.NsHandle, name string, opts ...Option) (*Device, error) {
	o := options{mtu: DefaultMTU}
	for _, opt := range opts {
		opt(&o)
	}
	if err := validate.InterfaceName(name); err != nil {
		return nil, kerr.New(codes.InvalidArgument, "wireguard: %v", err)
	}
	if o.mtu == 0 {
		o.mtu = DefaultMTU
	}
	if o.mtu < 1280 || o.mtu > 65535 {
		return nil, kerr.New(codes.InvalidArgument, "wireguard: MTU %d is outside 1280..65535", o.mtu)
	}
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, kerr.Wrap(err, "wireguard: keep namespace %s", ns)
	}
	d := &Device{name: name, ns: netns.NsHandle(fd), conns: map[net.Conn]struct{}{}}
	h, err := netlink.NewHandleAt(d.ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = d.ns.Close()
		return nil, kerr.Wrap(err, "wireguard: open netlink in namespace %s", ns)
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err == nil {
		_ = d.ns.Close()
		return nil, kerr.New(codes.AlreadyExists, "wireguard: interface %q already exists; pick another name", name)
	}

	if !o.userspace {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = name, o.mtu
		err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs})
		switch {
		case err == nil:
			d.kernel = true
		case errors.Is(err, unix.EOPNOTSUPP):
			// No WireGuard in this kernel: wireguard-go below.
		default:
			_ = d.ns.Close()
			return nil, kerr.Wrap(err, "wireguard: add kernel interface %q", name)
		}
	}
	if !d.kernel {
		if err := d.startUserspace(o); err != nil {
			_ = d.ns.Close()
			return nil, err
		}
	}
	link, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(link)
	}
	if err != nil {
		err = kerr.Wrap(err, "wireguard: set %q up", name)
	} else if d.bind != nil {
		err = d.bind.waitOpen(name)
	}
	if err != nil {
		if cerr := d.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("wireguard: undo: %w", cerr))
		}
		return nil, err
	}
	open.add(d)
	return d, nil
}

// Remove makes the name free in namespace ns: it closes this process's device of that name if
// one is open, or else deletes an interface of that name in ns and the socket file of the name.
// It is for names the caller owns (a forwarder's, by ifname's rule) that something left behind.
func Remove(ns netns.NsHandle, name string) error {
	open.mu.Lock()
	var found *Device
	for d := range open.set {
		if d.name == name {
			found = d
		}
	}
	open.mu.Unlock()
	if found != nil {
		return found.Close()
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "wireguard: open netlink in namespace %s", ns)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkDel(link)
	}
	if err != nil && !kerr.Missing(err) {
		return kerr.Wrap(err, "wireguard: delete %q", name)
	}
	if err := os.Remove(SocketPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return kerr.Wrap(err, "wireguard: remove socket of %q", name)
	}
	return nil
}

// open is the devices of this process that are not closed: a wireguard-go device lives in the
// process, and its socket outlives the process unless the device is closed first (CloseAll).
var open = &devices{set: map[*Device]struct{}{}}

type devices struct {
	mu  sync.Mutex
	set map[*Device]struct{}
}

func (s *devices) add(d *Device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[d] = struct{}{}
}

func (s *devices) remove(d *Device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.set, d)
}

// CloseAll closes every device of this process still open, for a program that exits with
// connections open: their interfaces and sockets go with it instead of staying behind.
func CloseAll() error {
	open.mu.Lock()
	all := make([]*Device, 0, len(open.set))
	for d := range open.set {
		all = append(all, d)
	}
	open.mu.Unlock()
	var errs []error
	for _, d := range all {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

// startUserspace runs wireguard-go for d on a TUN device in d's namespace, with its UAPI socket.
func (d *Device) startUserspace(o options) error {
	listener, err := listenUAPI(d.name)
	if err != nil {
		return err
	}
	var tdev tun.Device
	err = nsfile.Do(d.ns, func() (err error) {
		tdev, err = tun.CreateTUN(d.name, o.mtu)
		return err
	})
	if err != nil {
		_ = listener.Close()
		return kerr.Wrap(err, "wireguard: create TUN device %q", d.name)
	}
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	if l := o.logger; l != nil {
		l = l.With("interface", d.name)
		logger.Verbosef = func(format string, args ...any) { l.Debug(fmt.Sprintf(format, args...)) }
		logger.Errorf = func(format string, args ...any) { l.Error(fmt.Sprintf(format, args...)) }
	}
	d.bind = &nsBind{Bind: conn.NewDefaultBind(), ns: d.ns, opened: make(chan struct{}, 1)}
	d.dev = device.NewDevice(&nsTUN{Device: tdev, ns: d.ns}, d.bind, logger)
	d.listener = listener
	d.running.Add(1)
	go d.serveUAPI()
	return nil
}

// listenUAPI listens on name's UAPI socket, replacing a stale socket file but not a live one.
func listenUAPI(name string) (*net.UnixListener, error) {
	if err := os.MkdirAll(SocketDir, 0o755); err != nil {
		return nil, kerr.Wrap(err, "wireguard: make %s", SocketDir)
	}
	path := SocketPath(name)
	if c, err := net.Dial("unix", path); err == nil {
		_ = c.Close()
		return nil, kerr.New(codes.AlreadyExists,
			"wireguard: %s answers: a wireguard-go device named %q runs in some namespace; names must be unique across namespaces", path, name)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, kerr.Wrap(err, "wireguard: remove stale socket %s", path)
	}
	// Created with the process umask, at worst 0755: only root can connect (connecting needs write
	// permission); chmod then makes it private as wg(8) expects.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, kerr.Wrap(err, "wireguard: listen on %s", path)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, kerr.Wrap(err, "wireguard: chmod %s", path)
	}
	return l, nil
}

// SocketPath is the UAPI socket of the wireguard-go device name.
func SocketPath(name string) string {
	return filepath.Join(SocketDir, name+".sock")
}

// serveUAPI answers wgctrl's (and wg(8)'s) requests until the listener is closed.
func (d *Device) serveUAPI() {
	defer d.running.Done()
	for {
		c, err := d.listener.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			_ = c.Close()
			return
		}
		d.conns[c] = struct{}{}
		d.running.Add(1)
		d.mu.Unlock()
		go func() {
			defer d.running.Done()
			d.dev.IpcHandle(c) // closes c
			d.mu.Lock()
			delete(d.conns, c)
			d.mu.Unlock()
		}()
	}
}

// Name is the interface's name.
func (d *Device) Name() string { return d.name }

// Kernel reports whether the kernel's WireGuard serves the interface (else wireguard-go).
func (d *Device) Kernel() bool { return d.kernel }

// Configure applies cfg to the interface through wgctrl: private key, listen port, peers with
// their public keys, endpoints and allowed IPs. Fields left nil keep their values.
func (d *Device) Configure(cfg wgtypes.Config) error {
	err := d.client(func(c *wgctrl.Client) error { return c.ConfigureDevice(d.name, cfg) })
	return kerr.Wrap(err, "wireguard: configure %q", d.name)
}

// State reads the interface's configuration and peer statistics through wgctrl.
func (d *Device) State() (*wgtypes.Device, error) {
	var state *wgtypes.Device
	err := d.client(func(c *wgctrl.Client) (err error) {
		state, err = c.Device(d.name)
		return err
	})
	return state, kerr.Wrap(err, "wireguard: read %q", d.name)
}

// client runs fn with a wgctrl client opened in d's namespace, where the kernel's WireGuard
// netlink family sees d's interface (a UAPI socket is the same from everywhere).
func (d *Device) client(fn func(*wgctrl.Client) error) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return kerr.New(codes.FailedPrecondition, "device is closed")
	}
	return nsfile.Do(d.ns, func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		return fn(c)
	})
}

// Close removes the interface and stops everything serving it.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return d.err
	}
	d.closed = true
	open.remove(d)
	var conns []net.Conn
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()

	var errs []error
	if d.kernel {
		if err := d.deleteKernel(); err != nil {
			errs = append(errs, err)
		}
	} else {
		_ = d.listener.Close() // unlinks the socket file
		for _, c := range conns {
			_ = c.Close()
		}
		d.running.Wait()
		d.dev.Close() // closes the TUN device, which takes the interface with it
		<-d.dev.Wait()
		if err := os.Remove(SocketPath(d.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, kerr.Wrap(err, "wireguard: remove socket of %q", d.name))
		}
	}
	if err := d.ns.Close(); err != nil {
		errs = append(errs, kerr.Wrap(err, "wireguard: close namespace handle"))
	}
	d.mu.Lock()
	d.err = errors.Join(errs...)
	d.mu.Unlock()
	return d.err
}

func (d *Device) deleteKernel() error {
	h, err := netlink.NewHandleAt(d.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "wireguard: open netlink to delete %q", d.name)
	}
	defer h.Close()
	link, err := h.LinkByName(d.name)
	if err == nil {
		err = h.LinkDel(link)
	}
	if err != nil && !kerr.Missing(err) {
		return kerr.Wrap(err, "wireguard: delete %q", d.name)
	}
	return nil
}

// nsTUN asks for the TUN device's MTU inside its namespace: wireguard-go looks the MTU up by
// interface name on whatever thread it runs, which would find nothing, or another interface.
// After Close it answers with an error: wireguard-go's event goroutine may still ask while it
// winds down, and the namespace handle is closed by then.
type nsTUN struct {
	tun.Device
	ns     netns.NsHandle
	mu     sync.RWMutex
	closed bool
}

func (t *nsTUN) MTU() (mtu int, err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, os.ErrClosed
	}
	err = nsfile.Do(t.ns, func() (err error) {
		mtu, err = t.Device.MTU()
		return err
	})
	return mtu, err
}

func (t *nsTUN) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	return t.Device.Close()
}

// nsBind opens wireguard-go's UDP sockets inside the namespace; once open, they stay there. It
// also tells New when wireguard-go has brought the device up: wireguard-go does that on its own
// goroutine when it sees the interface go up, and a peer's handshake that arrives before the
// sockets are open is lost until the peer retries, five seconds later.
type nsBind struct {
	conn.Bind
	ns     netns.NsHandle
	opened chan struct{} // gets a value after a successful Open, if it has none
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = nsfile.Do(b.ns, func() (err error) {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	if err == nil {
		select {
		case b.opened <- struct{}{}:
		default:
		}
	}
	return fns, actual, err
}

// waitOpen waits until wireguard-go has opened the sockets of the device name.
func (b *nsBind) waitOpen(name string) error {
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-b.opened:
		return nil
	case <-timer.C:
		return kerr.New(codes.Unavailable, "wireguard: wireguard-go did not bring %q up within 5 s", name)
	}
}

// RemoveStale removes the sockets in SocketDir of devices named as ours says that nothing listens
// on any more: a wireguard-go device that ended with its process leaves its socket behind, and the
// directory is shared by every namespace, so only a socket that refuses connections is removed.
func RemoveStale(ours func(name string) bool) ([]string, error) {
	entries, err := os.ReadDir(SocketDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, kerr.Wrap(err, "wireguard: list %s", SocketDir)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".sock")
		if !ok || !ours(name) {
			continue
		}
		path := SocketPath(name)
		conn, err := net.Dial("unix", path)
		if err == nil {
			_ = conn.Close()
			continue // a live device
		}
		if !errors.Is(err, unix.ECONNREFUSED) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, kerr.Wrap(err, "wireguard: remove stale socket %s", path))
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}
