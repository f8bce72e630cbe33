package integrationtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mesh runs deployments-k8s/local/mesh.sh with a step, its files in dir.
func mesh(t *testing.T, dir, step string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("../deployments-k8s/local/mesh.sh")
	require.NoError(t, err)
	cmd := exec.Command(script, step)
	cmd.Env = append(os.Environ(), "VWIRE_DEMO_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("mesh.sh %s:\n%s", step, out)
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
		require.NoFileExists(t, filepath.Join("/proc", pid, "cmdline"), "process %s is gone", pid)
	}
}
