package nsmport

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"vwire.dev/integration-tests/spire"
)

// output is a process's output, read while it runs.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// start runs bin with env beside the test's environment until the test ends: SIGTERM, then its
// exit is awaited (and must be clean when clean is set).
func start(t *testing.T, bin string, clean bool, env ...string) *output {
	out := &output{}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if clean {
				require.NoError(t, err, "%s exits cleanly at SIGTERM:\n%s", filepath.Base(bin), out)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop within 20 s of SIGTERM:\n%s", filepath.Base(bin), out)
		}
	})
	return out
}

// waitFor waits for re in out and returns its submatches.
func waitFor(t *testing.T, out *output, what string, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	require.Eventually(t, func() bool { m = re.FindStringSubmatch(out.String()); return m != nil }, time.Minute, 20*time.Millisecond,
		"%s; its output:\n%s", what, out)
	return m
}

// TestThePortsRun runs both ports with identities from a real SPIRE agent: the endpoint
// registers through vwire's nsmgr (its registry in memory), the client asks the endpoint for a
// vWire directly (no forwarder: nothing to make in the kernel), and gets an address of each of
// the endpoint's groups. Mutual TLS, tokens signed with the SVIDs and verified, the namespace
// passed as a descriptor, groupipam under strictipam, the NSM-shaped registry client with
// clientinfo and sendfd: what MIGRATING.md maps is what runs. At the end the endpoint
// unregisters and every program exits cleanly at SIGTERM.
func TestThePortsRun(t *testing.T) {
	bins := t.TempDir()
	for pkg, name := range map[string]string{"./testdata/vwire/nse": "nse", "./testdata/vwire/nsc": "nsc", "vwire.dev/cmd-nsmgr": "cmd-nsmgr"} {
		got, err := exec.Command("go", "build", "-o", filepath.Join(bins, name), pkg).CombinedOutput()
		require.NoError(t, err, "go build %s:\n%s", pkg, got)
	}
	td := spiffeid.RequireTrustDomainFromString("nsmport.vwire.test")
	s := spire.Start(t, spire.Options{TrustDomain: td})
	for _, name := range []string{"nse", "nsc", "cmd-nsmgr"} {
		s.RegisterBinary(t, spiffeid.RequireFromPath(td, "/"+name), filepath.Join(bins, name))
	}
	identity := "SPIFFE_ENDPOINT_SOCKET=" + s.Endpoint()
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	nsmgr := "unix://" + filepath.Join(dir, "nsmgr.sock")

	// Cleanups run last first: the client stops, then the endpoint (unregistering), the nsmgr.
	start(t, filepath.Join(bins, "cmd-nsmgr"), true, identity, "NSM_NAME=nsmgr", "NSM_LISTEN_ON="+nsmgr)
	var nse *output
	t.Cleanup(func() { // after the endpoint stopped
		if nse != nil && strings.Contains(nse.String(), "unable to unregister") {
			t.Errorf("the endpoint did not unregister at SIGTERM:\n%s", nse)
		}
	})
	nse = start(t, filepath.Join(bins, "nse"), true, identity, "NSM_NAME=port-nse", "NSM_CONNECT_TO="+nsmgr,
		"NSM_SERVICE_NAMES=port-svc", "NSM_PAYLOAD=IP", "NSM_CIDR_GROUPS=10.77.0.0/30;fd77::/126,10.78.0.0/30",
		"NODE_NAME=node-1") // for clientinfo's labels
	listen := waitFor(t, nse, "the endpoint serves", regexp.MustCompile(`INFO serving .*url=(unix://\S+)`))[1]
	waitFor(t, nse, "the endpoint registers through the nsmgr", regexp.MustCompile(`INFO registered .*name=port-nse`))

	nsc := start(t, filepath.Join(bins, "nsc"), true, identity, "NSM_NAME=port-nsc", "NSM_CONNECT_TO="+listen,
		"NSM_NETWORK_SERVICES=kernel://port-svc/nsm-1")
	got := waitFor(t, nsc, "the client connects", regexp.MustCompile(`INFO connected .*service=port-svc (.*)`))[1]
	// One link per group and family: 10.77.0.0/30 (IPv4 of the first group); fd77::/126 and
	// 10.78.0.0/30 (the second group's two families).
	for _, want := range []string{"10.77.0.2/32", "10.78.0.2/32", "fd77::2/128", "10.77.0.1/32", "10.78.0.1/32", "fd77::1/128"} {
		require.Contains(t, got, want, "the client's IP context")
	}
}
