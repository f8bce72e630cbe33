package kubetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartRestartStop(t *testing.T) {
	var dir string
	t.Run("cluster", func(t *testing.T) {
		c := Start(t)
		dir = c.dir
		ctx := t.Context()

		// The kubeconfig file gives the same access as Config.
		fromFile, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		require.NoError(t, err)
		for ns, cfg := range map[string]*rest.Config{"vw-config": c.Config, "vw-kubeconfig": fromFile} {
			client, err := kubernetes.NewForConfig(cfg)
			require.NoError(t, err)
			_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			require.NoError(t, err, ns)
			got, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			require.NoError(t, err, ns)
			require.Equal(t, ns, got.Name)
		}

		c.RestartAPIServer(t)
		client, err := kubernetes.NewForConfig(c.Config)
		require.NoError(t, err)
		for _, name := range []string{"vw-config", "vw-kubeconfig"} {
			_, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err, "namespace %s after the restart", name)
		}
		require.True(t, running(t, dir), "no process runs in %s", dir)
	})
	require.NotEmpty(t, dir)
	require.False(t, running(t, dir), "a process of the stopped cluster still runs")
	_, err := os.Stat(dir)
	require.True(t, os.IsNotExist(err), "the cluster's directory %s is still there", dir)
}

func TestWithCRDs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "crd.yaml"), []byte(widgetCRD), 0o600))
	c := Start(t, WithCRDs(dir))
	client, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	resources, err := client.Discovery().ServerResourcesForGroupVersion("example.vwire.dev/v1")
	require.NoError(t, err)
	require.Len(t, resources.APIResources, 1)
	require.Equal(t, "widgets", resources.APIResources[0].Name)
}

func TestMissingBinaries(t *testing.T) {
	t.Setenv(binEnv, t.TempDir())
	_, err := binDir()
	require.ErrorContains(t, err, "run `make kube-bins`")
}

// running tells whether a process has dir in its command line.
func running(t *testing.T, dir string) bool {
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			return true
		}
	}
	return false
}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.vwire.dev
spec:
  group: example.vwire.dev
  names:
    kind: Widget
    listKind: WidgetList
    plural: widgets
    singular: widget
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
`
