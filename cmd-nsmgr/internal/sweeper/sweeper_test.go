package sweeper_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"vwire.dev/cmd-nsmgr/internal/sweeper"
	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk/pkg/tools/log"
)

// listenEnv makes the test binary a stand-in forwarder: it listens on the socket the variable
// names, says "ready", and exits when its stdin closes or it is killed.
const listenEnv = "VWT_SWEEPER_LISTEN"

func TestMain(m *testing.M) {
	if path := os.Getenv(listenEnv); path != "" {
		l, err := net.Listen("unix", path)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false) // a forwarder killed leaves its socket file
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// namespace makes a network namespace of the test's own, removed at cleanup.
func namespace(t *testing.T) (string, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("makes network namespaces: run as root (CI does)")
	}
	name := fmt.Sprintf("vwt-sw-%d", time.Now().UnixNano()%1e9)
	require.NoError(t, exec.Command("ip", "netns", "add", name).Run())
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Close() })
	return name, ns
}

// forwarder starts a stand-in forwarder process in the namespace, listening on path; kill ends
// it as a crash would.
func forwarder(t *testing.T, nsName, path string) (kill func()) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command("ip", "netns", "exec", nsName, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), listenEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	kill = func() {
		_ = cmd.Process.Kill()
		_ = stdin.Close()
		_ = cmd.Wait()
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	return kill
}

func dir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// passed opens the socket file as a forwarder passes it (registry/common/sendfd: O_PATH).
func passed(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestLocateFindsTheNamespace: a process in a namespace the test made listens on a socket;
// from the socket file's descriptor alone, Locate finds that namespace and the socket's path.
func TestLocateFindsTheNamespace(t *testing.T) {
	name, ns := namespace(t)
	path := filepath.Join(dir(t), "fwd.sock")
	forwarder(t, name, path)

	home, err := sweeper.Locate(passed(t, path))
	require.NoError(t, err)
	defer home.Close()
	require.True(t, nsfile.Same(ns, home.NS), "Locate found another namespace than the forwarder's")
	own, err := netns.Get()
	require.NoError(t, err)
	defer own.Close()
	require.False(t, nsfile.Same(own, home.NS))
	require.Equal(t, path, home.Socket)
}

// vwire puts in ns a veth pair named as a forwarder names a connection's ends.
func vwire(t *testing.T, nsName, connID string) (string, string) {
	t.Helper()
	a, b := ifname.Name(connID, ifname.Client), ifname.Name(connID, ifname.Endpoint)
	out, err := exec.Command("ip", "-n", nsName, "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return a, b
}

func links(t *testing.T, nsName string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", nsName, "-br", "link").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

func fwd(name string) *registry.NetworkServiceEndpoint {
	return &registry.NetworkServiceEndpoint{Name: name, NetworkServiceNames: []string{"forwarder"}}
}

// TestGoneSweepsUnlessAForwarderLivesThere: a forwarder gone for good is swept (its vWire's
// ends and its socket file) unless another registered forwarder lives in its namespace.
func TestGoneSweepsUnlessAForwarderLivesThere(t *testing.T) {
	name, _ := namespace(t)
	d := dir(t)
	ctx := log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
	s := sweeper.New()

	oldPath := filepath.Join(d, "old.sock")
	killOld := forwarder(t, name, oldPath)
	old := s.Watch(ctx, fwd("fwd-old"), passed(t, oldPath))
	require.NotNil(t, old)
	a, b := vwire(t, name, "conn-1")

	newPath := filepath.Join(d, "new.sock")
	killNew := forwarder(t, name, newPath)
	successor := s.Watch(ctx, fwd("fwd-new"), passed(t, newPath))
	require.NotNil(t, successor)

	killOld()
	old.Gone(ctx) // a successor lives in the namespace: nothing is swept
	old.Close()
	require.Contains(t, links(t, name), a)
	require.FileExists(t, oldPath)

	// The successor dies too: the last forwarder of the namespace is gone, and it is swept.
	killNew()
	successor.Gone(ctx)
	successor.Close()
	l := links(t, name)
	require.NotContains(t, l, a)
	require.NotContains(t, l, b)
	require.NoFileExists(t, newPath)
	require.FileExists(t, oldPath, "a socket file the gone forwarder did not pass was removed")
	require.Nil(t, s.Watch(ctx, fwd("fwd-path"), nil), "a forwarder that registered by path is followed")
}

// TestGoneRemovesTheDeadSocket: a forwarder killed for good leaves its socket file; the sweep
// removes it, and a second Gone finds nothing more to do.
func TestGoneRemovesTheDeadSocket(t *testing.T) {
	name, _ := namespace(t)
	ctx := log.WithLogger(context.Background(), slog.New(slog.DiscardHandler))
	path := filepath.Join(dir(t), "fwd.sock")
	kill := forwarder(t, name, path)
	w := sweeper.New().Watch(ctx, fwd("fwd-1"), passed(t, path))
	require.NotNil(t, w)
	a, _ := vwire(t, name, "conn-2")
	kill()
	require.FileExists(t, path)
	w.Gone(ctx)
	require.NoFileExists(t, path)
	require.NotContains(t, links(t, name), a)
	w.Gone(ctx) // repeated: nothing left, nothing fails
	w.Close()
}
