package mdtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"vwire.dev/integration-tests/cluster"
)

// nodes is the size of the cluster a suite starts: two, so that the examples across nodes
// (Kernel2Wireguard2Kernel and the like) have a node for the client and one for the endpoint;
// the examples on one node pin their client to the endpoint's node themselves.
const nodes = 2

// upTimeout bounds the start of a suite's cluster from built programs.
const upTimeout = 10 * time.Minute

// Main is a suite's TestMain: it finds or starts the cluster, runs the Setup examples, the tests,
// the Setup examples' cleanup and stops the cluster it started; then it checks that no goroutine
// leaked. The cluster is the one VWIRE_KUBECONFIG (or else KUBECONFIG) names if either is set;
// otherwise a new one (of two nodes) in .build/cluster-examples of the workspace, from the programs
// of `make cluster-bins` and the images of `make images` (both are required, neither is built
// here: `make examples` does both first). It returns the exit code.
func (s *Suite) Main(m *testing.M) int {
	workspace, err := filepath.Abs(s.Workspace)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mdtest: %v\n", err)
		return 1
	}
	s.Workspace = workspace
	bin := os.Getenv("VWIRE_KUBE_BIN")
	if bin == "" {
		bin = filepath.Join(workspace, ".build", "bin")
	}
	kubeconfig := os.Getenv("VWIRE_KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	var c *cluster.Cluster
	if kubeconfig == "" {
		ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
		c, err = cluster.Up(ctx, cluster.Options{
			BinDir:    bin,
			StateDir:  filepath.Join(workspace, ".build", "cluster-examples"),
			ImagesDir: filepath.Join(workspace, ".build", "images"),
			Nodes:     nodes,
			Progress:  os.Stderr,
		})
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "mdtest: starting the suite's cluster: %v\n(or name a running cluster with VWIRE_KUBECONFIG)\n", err)
			return 1
		}
		kubeconfig = c.Kubeconfig
	}
	s.kubeconfig, s.bin = kubeconfig, bin
	s.env = environment(os.Environ(), kubeconfig, bin)

	setup := &logReporter{out: os.Stderr}
	code := 0
	for _, ex := range s.Setup {
		if !s.Run(setup, ex) {
			fmt.Fprintf(os.Stderr, "mdtest: the suite's setup failed at example %s: no test runs\n", ex.Name)
			code = 1
			break
		}
	}
	if code == 0 {
		code = m.Run()
	}
	if !setup.runCleanups() {
		code = 1
	}
	if c != nil {
		if err := c.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "mdtest: stopping the suite's cluster: %v\n", err)
			code = 1
		}
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "mdtest: %v\n", err)
		code = 1
	}
	return code
}

// environment is env with KUBECONFIG set and bin first on PATH.
func environment(env []string, kubeconfig, bin string) []string {
	path := os.Getenv("PATH")
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "PATH=")
	})
	return append(env, "KUBECONFIG="+kubeconfig, "PATH="+bin+string(os.PathListSeparator)+path)
}

// logReporter reports the examples a suite runs outside any test (its Setup) to out; their
// cleanups run when runCleanups is called, the last registered first, as testing's do.
type logReporter struct {
	out      io.Writer
	failed   bool
	cleanups []func()
}

func (r *logReporter) Helper() {}

func (r *logReporter) Logf(format string, args ...any) {
	_, _ = fmt.Fprintf(r.out, format+"\n", args...)
}

func (r *logReporter) Errorf(format string, args ...any) {
	r.failed = true
	r.Logf(format, args...)
}

func (r *logReporter) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// runCleanups runs the cleanups and reports whether nothing failed, before or during them.
func (r *logReporter) runCleanups() bool {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	return !r.failed
}
