package wireguard_test

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTunnel joins two namespaces by a veth underlay, makes a WireGuard interface in each, and
// pings across the tunnel.
func TestTunnel(t *testing.T) {
	tests := []struct {
		name     string
		underlay [2]string // CIDR of each node's underlay address
		overlay  *networkservice.IPContext
	}{
		{
			name:     "ipv4 over ipv4",
			underlay: [2]string{"10.254.0.1/24", "10.254.0.2/24"},
			overlay:  &networkservice.IPContext{SrcIpAddrs: []string{"10.99.0.1/24"}, DstIpAddrs: []string{"10.99.0.2/24"}},
		},
		{
			name:     "dual stack over ipv6",
			underlay: [2]string{"fd00:254::1/64", "fd00:254::2/64"},
			overlay: &networkservice.IPContext{
				SrcIpAddrs: []string{"10.99.0.1/32", "fd00:99::1/128"},
				DstIpAddrs: []string{"10.99.0.2/32", "fd00:99::2/128"},
			},
		},
	}
	modes := []struct {
		name string
		opts []wireguard.Option
	}{{name: "kernel where it has WireGuard"}, {name: "wireguard-go", opts: []wireguard.Option{wireguard.WithUserspace()}}}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) { tunnel(t, tt.underlay, tt.overlay, mode.opts) })
		}
	}
}

// tunnel runs traffic between two namespaces over WireGuard devices made with opts.
func tunnel(t *testing.T, underlay [2]string, overlay *networkservice.IPContext, opts []wireguard.Option) {
	a, _ := nstest.New(t)
	b, _ := nstest.New(t)
	nstest.Veth(t, a, "ul0", underlay[:1], b, "ul0", underlay[1:])
	before := [2]string{nstest.Dump(t, a), nstest.Dump(t, b)}

	keys := [2]wgtypes.Key{generate(t), generate(t)}
	ports := [2]int{51820, 51821}
	names := [2]string{nstest.Name("vwg", 8), nstest.Name("vwg", 8)}
	sides := [2]ipconfig.Side{ipconfig.Client, ipconfig.Endpoint}
	addrs := [2][]*net.IPNet{overlay.GetSrcIPNets(), overlay.GetDstIPNets()}
	var devs [2]*wireguard.Device
	logs := &lockedBuffer{} // shown when the test fails
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("wireguard-go said:\n%s", logs.String())
		}
	})
	for i, ns := range [2]netns.NsHandle{a, b} {
		dev, err := wireguard.New(ns, names[i], append(opts, wireguard.WithLogger(logger))...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = dev.Close() })
		t.Logf("%s: kernel WireGuard: %t", names[i], dev.Kernel())
		devs[i] = dev

		other := 1 - i
		remote, _, err := net.ParseCIDR(underlay[other])
		require.NoError(t, err)
		var allowed []net.IPNet
		for _, n := range addrs[other] {
			bits := 8 * len(n.IP.To16())
			if n.IP.To4() != nil {
				bits = 32
			}
			allowed = append(allowed, net.IPNet{IP: n.IP, Mask: net.CIDRMask(bits, bits)})
		}
		require.NoError(t, dev.Configure(wgtypes.Config{
			PrivateKey:   &keys[i],
			ListenPort:   &ports[i],
			ReplacePeers: true,
			Peers: []wgtypes.PeerConfig{{
				PublicKey:  keys[other].PublicKey(),
				Endpoint:   &net.UDPAddr{IP: remote, Port: ports[other]},
				AllowedIPs: allowed,
			}},
		}))
		require.NoError(t, ipconfig.Apply(ns, names[i], sides[i], overlay, "wg"))
	}

	for _, dst := range addrs[1] {
		require.NoError(t, ping.Ping(a, netip.MustParseAddr(dst.IP.String())))
	}
	for _, dst := range addrs[0] {
		require.NoError(t, ping.Ping(b, netip.MustParseAddr(dst.IP.String())))
	}
	state, err := devs[0].State()
	require.NoError(t, err)
	require.Equal(t, keys[0].PublicKey(), state.PublicKey)
	require.Equal(t, ports[0], state.ListenPort)
	require.Len(t, state.Peers, 1)
	require.Positive(t, state.Peers[0].ReceiveBytes, "bytes came through the tunnel")

	for i, dev := range devs {
		require.NoError(t, dev.Close())
		require.NoError(t, dev.Close(), "Close again is a no-op")
		_, err := os.Stat(wireguard.SocketPath(names[i]))
		require.ErrorIs(t, err, os.ErrNotExist, "no UAPI socket is left")
	}
	require.Equal(t, before, [2]string{nstest.Dump(t, a), nstest.Dump(t, b)}, "only the underlay is left")
	_, err = devs[0].State()
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
}

func generate(t *testing.T) wgtypes.Key {
	key, err := wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	return key
}

// TestNewState shows what New makes: an up interface with no key, port or peer, and a private
// UAPI socket; wireguard-go's messages go to the logger given.
func TestNewState(t *testing.T) {
	ns, _ := nstest.New(t)
	name := nstest.Name("vwg", 8)
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dev, err := wireguard.New(ns, name, wireguard.WithUserspace(), wireguard.WithMTU(1380), wireguard.WithLogger(logger))
	require.NoError(t, err)
	t.Cleanup(func() { _ = dev.Close() })
	require.Equal(t, name, dev.Name())

	link, err := nstest.Handle(t, ns).LinkByName(name)
	require.NoError(t, err)
	require.Equal(t, 1380, link.Attrs().MTU)
	require.NotZero(t, link.Attrs().Flags&net.FlagUp, "the interface is up")
	info, err := os.Stat(wireguard.SocketPath(name))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	state, err := dev.State()
	require.NoError(t, err)
	require.Equal(t, wgtypes.Key{}, state.PrivateKey)
	require.Empty(t, state.Peers)

	key := generate(t)
	require.NoError(t, dev.Configure(wgtypes.Config{PrivateKey: &key}))
	require.NoError(t, dev.Close())
	require.Contains(t, logs.String(), "UAPI: Updating private key")
	require.Contains(t, logs.String(), "interface="+name)
}

// lockedBuffer collects log lines that wireguard-go's workers may still write after Close.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNewFailsCleanly(t *testing.T) {
	a, _ := nstest.New(t)
	b, _ := nstest.New(t)
	name := nstest.Name("vwg", 8)
	first, err := wireguard.New(a, name, wireguard.WithUserspace())
	require.NoError(t, err)
	t.Cleanup(func() { _ = first.Close() })
	before := nstest.Dump(t, b)

	tests := []struct {
		name  string
		iface string
		opts  []wireguard.Option
		code  codes.Code
		msg   string
	}{
		{name: "name taken in another namespace", iface: name, code: codes.AlreadyExists,
			msg: "a wireguard-go device named \"" + name + "\" runs in some namespace; names must be unique across namespaces"},
		{name: "name too long", iface: "wireguard-tunnel0", code: codes.InvalidArgument,
			msg: `wireguard: interface name "wireguard-tunnel0" is 17 bytes, limit 15`},
		{name: "MTU too small for IPv6", iface: "wg-x", opts: []wireguard.Option{wireguard.WithMTU(1000)}, code: codes.InvalidArgument,
			msg: "wireguard: MTU 1000 is outside 1280..65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wireguard.New(b, tt.iface, append(tt.opts, wireguard.WithUserspace())...)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tt.msg)
			require.Equal(t, before, nstest.Dump(t, b))
		})
	}
	_, err = first.State()
	require.NoError(t, err, "the first device still answers")
}

func TestRemoveStaleKeepsLiveSockets(t *testing.T) {
	nstest.RequireRoot(t)
	require.NoError(t, os.MkdirAll(wireguard.SocketDir, 0o755))
	stale := wireguard.SocketPath("vwstaletest0001")
	lis, err := net.Listen("unix", stale)
	require.NoError(t, err)
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, lis.Close()) // the file stays, nothing listens: what a killed process leaves
	t.Cleanup(func() { _ = os.Remove(stale) })

	live := wireguard.SocketPath("vwlivetest00001")
	lis, err = net.Listen("unix", live)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()

	removed, err := wireguard.RemoveStale(func(name string) bool {
		return strings.HasSuffix(name, "test0001") || strings.HasSuffix(name, "test00001")
	})
	require.NoError(t, err)
	require.Equal(t, []string{stale}, removed)
	require.NoFileExists(t, stale)
	require.FileExists(t, live)
}

func TestCloseAllClosesWhatIsOpen(t *testing.T) {
	ns, _ := nstest.New(t)
	d, err := wireguard.New(ns, nstest.Name("vw", 13), wireguard.WithUserspace())
	require.NoError(t, err)
	require.FileExists(t, wireguard.SocketPath(d.Name()))
	require.NoError(t, wireguard.CloseAll())
	require.NoFileExists(t, wireguard.SocketPath(d.Name()), "the device went with its socket")
	require.NoError(t, d.Close(), "closing again is fine")
}
