package integrationtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mesh runs deployments-k8s/local/mesh.sh with args, its files in dir.
func mesh(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("../deployments-k8s/local/mesh.sh")
	require.NoError(t, err)
	cmd := exec.Command(script, args...)
	cmd.Env = append(os.Environ(), "VWIRE_DEMO_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("mesh.sh %s:\n%s", strings.Join(args, " "), out)
	return string(out), err
}

func namespaces(t *testing.T) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	var vw []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "vw-") {
			vw = append(vw, f[0])
		}
	}
	return vw
}

// TestLocalMesh is the README's main command: every topology carries ping, and down leaves no
// namespace, process or file.
func TestLocalMesh(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the local mesh makes network namespaces: run as root (CI does)")
	}
	require.Empty(t, namespaces(t), "vw-* namespaces exist before the test: a mesh is up on this machine")
	dir := filepath.Join(t.TempDir(), "mesh")
	t.Cleanup(func() { _, _ = mesh(t, dir, "down") })

	_, err := mesh(t, dir, "up")
	require.NoError(t, err)
	out, err := mesh(t, dir, "check")
	require.NoError(t, err)
	for _, topology := range []string{"k2k", "k2k-eth", "k2wg2k", "k2vx2k"} {
		require.Contains(t, out, topology+": ping", topology)
	}
	heal(t, dir)

	pids, err := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	require.NoError(t, err)
	require.NotEmpty(t, pids)
	var procs []string
	for _, p := range pids {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		procs = append(procs, strings.TrimSpace(string(b)))
	}

	_, err = mesh(t, dir, "down")
	require.NoError(t, err)
	require.Empty(t, namespaces(t), "down removed every namespace")
	require.NoDirExists(t, dir, "down removed its files")
	for _, pid := range procs {
		require.False(t, running(pid), "process %s is gone", pid)
	}
}

// heal kills forwarder 1 while the k2k client pings its endpoint every 20 ms, starts it again,
// and waits for the replies to come back by themselves; it prints the longest silence.
func heal(t *testing.T, dir string) {
	t.Helper()
	ping := exec.Command("ip", "netns", "exec", "vw-nsc-k2k", "ping", "-D", "-n", "-i", "0.02", "-W", "1", "172.16.1.1")
	out := &lockedBuffer{}
	ping.Stdout = out
	require.NoError(t, ping.Start())
	t.Cleanup(func() { _ = ping.Process.Kill(); _ = ping.Wait() })

	replies := func() []float64 {
		var at []float64
		for _, line := range strings.Split(out.String(), "\n") {
			var ts float64
			if strings.Contains(line, "bytes from") {
				if _, err := fmt.Sscanf(line, "[%f]", &ts); err == nil {
					at = append(at, ts)
				}
			}
		}
		return at
	}
	require.Eventually(t, func() bool { return len(replies()) >= 10 }, 10*time.Second, 10*time.Millisecond, "pings before the restart")
	_, err := mesh(t, dir, "restart", "forwarder1")
	require.NoError(t, err)
	restarted := float64(time.Now().UnixMicro()) / 1e6
	after := func() []float64 {
		var at []float64
		for _, ts := range replies() {
			if ts > restarted {
				at = append(at, ts)
			}
		}
		return at
	}
	require.Eventually(t, func() bool { return len(after()) >= 25 }, 30*time.Second, 10*time.Millisecond,
		"traffic came back by itself after the forwarder restarted")
	_ = ping.Process.Kill()
	_ = ping.Wait()
	at := replies()
	gap := 0.0
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i]-at[i-1])
	}
	back := after()[0] - restarted
	t.Logf("forwarder 1 killed and started again: replies resumed %.0f ms after the new forwarder started; the longest silence was %.0f ms",
		back*1000, gap*1000)
}

// lockedBuffer is ping's output, written by exec's copying goroutine while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
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

// running tells whether the process runs: a zombie its parent has not reaped yet holds nothing.
func running(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
