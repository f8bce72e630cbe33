package etcd

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk-k8s/pkg/tools/kubetest"
)

// TestRelistWhenHistoryIsGone: a watch resuming from a resourceVersion the API server has no
// history for (410 Gone) lists again and sends only what changed since it last sent.
func TestRelistWhenHistoryIsGone(t *testing.T) {
	c := kubetest.Start(t, kubetest.WithCRDs("../../../deployments/crds"))
	client, err := v1.NewForConfig(c.Config)
	require.NoError(t, err)
	s := newStore(client, "default", schema[*registry.NetworkServiceEndpoint]{match: func(_, _ *registry.NetworkServiceEndpoint) bool { return true }}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a watch that never relists fails here
	defer cancel()
	for _, name := range []string{"same", "changed", "new"} {
		_, err := s.Register(ctx, &registry.NetworkServiceEndpoint{Name: name})
		require.NoError(t, err)
	}
	same, err := s.api.Get(ctx, "same", metav1.GetOptions{})
	require.NoError(t, err)

	var got []string
	w := &watcher[*registry.NetworkServiceEndpoint]{store: s, query: &registry.NetworkServiceEndpoint{},
		sent: map[string]*v1.NetworkServiceEndpoint{
			"same":    same, // sent at its current version
			"changed": {ObjectMeta: metav1.ObjectMeta{Name: "changed", ResourceVersion: "1"}},
			"gone":    {ObjectMeta: metav1.ObjectMeta{Name: "gone", ResourceVersion: "1"}},
		},
		observe: func(obj *v1.NetworkServiceEndpoint, deleted bool) error {
			name := obj.Name
			if deleted {
				name = "-" + name
			}
			got = append(got, name)
			if len(got) == 3 {
				cancel()
			}
			return nil
		}}
	// Version 1 is older than anything the API server's watch cache holds.
	require.NoError(t, w.follow(ctx, "1"))
	require.Equal(t, []string{"changed", "new", "-gone"}, got)
}
