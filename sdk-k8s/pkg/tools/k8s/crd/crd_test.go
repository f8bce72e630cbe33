package crd_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk-k8s/pkg/tools/k8s/crd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestManifestsAreCurrent fails when a type changed and the manifests were not generated again.
func TestManifestsAreCurrent(t *testing.T) {
	manifests, err := crd.Manifests()
	require.NoError(t, err)
	require.Len(t, manifests, 2)
	for _, dir := range crd.Dirs {
		for file, want := range manifests {
			got, err := os.ReadFile(filepath.Join(dir, file))
			require.NoError(t, err, "run `go generate ./pkg/tools/k8s/crd` in sdk-k8s")
			require.Equal(t, string(want), string(got), "%s is stale: run `go generate ./pkg/tools/k8s/crd` in sdk-k8s", filepath.Join(dir, file))
		}
	}
}
