package integrationtests

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// vwctl runs the mesh's cmd-vwctl (mesh.sh builds it, and gives it the operators' identity)
// with args, and returns its output and exit code.
func vwctl(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, "bin", "cmd-vwctl"), args...)
	cmd.Env = append(os.Environ(), "VWIRE_DEMO_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("vwctl %s:\n%s", strings.Join(args, " "), out)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

// TestVwctl is vwctl on the local mesh with its defaults: it lists every client's connection at
// node 1's nsmgr, checks each vWire by ping, and once a forwarder is killed names it as where the
// path broke and the vWire through it as failing, while the others pass.
func TestVwctl(t *testing.T) {
	dir := upMesh(t)

	out, code := vwctl(t, dir, "-o", "json", "connections")
	require.Zero(t, code)
	var conns []struct {
		ID, Client, Service, State, Mechanism, Interface string
	}
	require.NoError(t, json.Unmarshal([]byte(out), &conns))
	ids := map[string]string{} // by client
	for _, c := range conns {
		require.Equal(t, "UP", c.State, "%s's connection", c.Client)
		require.Equal(t, "KERNEL", c.Mechanism)
		require.Equal(t, "nsm-1", c.Interface)
		ids[c.Client] = c.ID
	}
	for _, tc := range topologies {
		require.Contains(t, ids, "nsc-"+tc.name, "vwctl connections lists every client of node 1")
	}

	out, code = vwctl(t, dir, "check")
	require.Zero(t, code, "every vWire carries ping")
	require.Equal(t, 2*len(topologies), strings.Count(out, "PASS"), "IPv4 and IPv6 across each vWire")

	out, code = vwctl(t, dir, "path", ids["nsc-k2wg2k"])
	require.Zero(t, code)
	require.Contains(t, out, "every hop that shows the connection holds it UP")

	// forwarder2 dies: the WireGuard vWire of k2wg2k dies with its device, in that process.
	_, err := mesh(t, dir, "kill", "forwarder2")
	require.NoError(t, err)
	out, code = vwctl(t, dir, "-o", "json", "path", ids["nsc-k2wg2k"])
	require.Equal(t, 1, code, "a broken path is exit code 1")
	var path struct {
		Broken int
		Hops   []struct{ Name, Role, State, Error string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &path))
	require.Equal(t, 4, path.Broken)
	require.Equal(t, "forwarder-2", path.Hops[4].Name, "the killed forwarder is the broken hop")
	require.Equal(t, "UNREACHABLE", path.Hops[4].State)

	out, code = vwctl(t, dir, "check")
	require.Equal(t, 1, code, "a failed ping is exit code 1")
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "nsc-k2wg2k"):
			require.Contains(t, line, "FAIL", "the vWire through the dead WireGuard device")
		case strings.Contains(line, "nsc-k2k "), strings.Contains(line, "nsc-k2k-eth"):
			require.Contains(t, line, "PASS", "node 1's own vWires do not cross forwarder 2")
		}
	}
	require.True(t, slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.Contains(l, "nsc-k2wg2k") }))
}
