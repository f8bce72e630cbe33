// Package kubetest starts a real etcd and kube-apiserver on loopback for a test, so that code
// that talks to Kubernetes is tested against the API server it will meet, not a fake.
//
// It drives controller-runtime's envtest with the binaries `make kube-bins` builds from the Go
// module proxy: from $VWIRE_KUBE_BIN, else from .build/bin beside the go.work found by walking
// up from the working directory. A test whose binaries are missing fails and says how to build
// them; it is never skipped, because CI builds them.
//
// Guarantees callers rely on:
//   - each Start is independent: its own ports and its own temporary directory (certificates,
//     etcd data, kubeconfig), so packages may run their tests in parallel;
//   - Start returns once the API server answers and every CRD of WithCRDs is established;
//   - RestartAPIServer keeps etcd, the address and the certificates, so Config and Kubeconfig
//     still work after it and what was stored is still there;
//   - t.Cleanup stops both processes and removes the directory, even when the test failed.
package kubetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// binEnv names the variable holding the folder with kube-apiserver and etcd.
const binEnv = "VWIRE_KUBE_BIN"

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	Config     *rest.Config // admin access
	Kubeconfig string       // path of a kubeconfig file with the same access (for cmd tests)

	env *envtest.Environment
	dir string // everything the cluster writes
}

// Option configures Start.
type Option func(*options)

type options struct {
	crdDirs []string
}

// WithCRDs installs every CRD manifest (*.yaml) in dir and waits until they are established.
func WithCRDs(dir string) Option {
	return func(o *options) { o.crdDirs = append(o.crdDirs, dir) }
}

// startTimeout bounds the start of each process; a cold kube-apiserver is ready in about 3 s.
const startTimeout = time.Minute

// Start starts etcd and a kube-apiserver for the test, stopped in t.Cleanup.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	// envtest logs through controller-runtime's logger, and complains when none is set.
	ctrllog.SetLogger(logr.Discard())

	dir, err := os.MkdirTemp("", "vw-kube")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	// Certificates and data in directories of our own: envtest keeps them across a restart of
	// the API server only when it did not make them.
	for _, sub := range []string{"apiserver", "etcd"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	apiServer := &envtest.APIServer{CertDir: filepath.Join(dir, "apiserver")}
	// On loopback there is no address to publish as the kubernetes Service's endpoint.
	apiServer.Configure().Set("endpoint-reconciler-type", "none")
	// A stopping API server otherwise waits a minute for open watches, which never end by
	// themselves; with this it answers new requests 429 and closes the rest after 2 s.
	apiServer.Configure().Set("shutdown-send-retry-after", "true")
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: bin,
		ControlPlane: envtest.ControlPlane{
			APIServer: apiServer,
			Etcd:      &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")},
		},
		CRDDirectoryPaths:        o.crdDirs,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  startTimeout,
	}
	t.Cleanup(c.stop(t))
	cfg, err := c.env.Start()
	if err != nil {
		t.Fatalf("kubetest: start etcd and kube-apiserver from %s: %v", bin, err)
	}
	c.Config = cfg
	if err := os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *Cluster) stop(t testing.TB) func() {
	return func() {
		if err := c.env.Stop(); err != nil {
			t.Errorf("kubetest: stop etcd and kube-apiserver: %v", err)
		}
		if err := os.RemoveAll(c.dir); err != nil {
			t.Errorf("kubetest: %v", err)
		}
	}
}

// RestartAPIServer stops the API server and starts it again on the same address, etcd kept.
func (c *Cluster) RestartAPIServer(t testing.TB) {
	t.Helper()
	s := c.env.ControlPlane.GetAPIServer()
	if err := s.Stop(); err != nil {
		t.Fatalf("kubetest: stop kube-apiserver: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("kubetest: start kube-apiserver again: %v", err)
	}
}

// binDir returns the folder holding kube-apiserver and etcd, or an error saying how to build them.
func binDir() (string, error) {
	dir := os.Getenv(binEnv)
	if dir == "" {
		root, err := workspaceRoot()
		if err != nil {
			return "", fmt.Errorf("kubetest: %s is not set and %w; run `make kube-bins` in the workspace root and set %s to its .build/bin", binEnv, err, binEnv)
		}
		dir = filepath.Join(root, ".build", "bin")
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("kubetest: no %s in %s; run `make kube-bins` in the workspace root (it builds kube-apiserver and etcd from the Go module proxy)", name, dir)
		}
	}
	return dir, nil
}

// workspaceRoot returns the nearest folder at or above the working directory holding go.work.
func workspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}
