package clientinfo_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/registry/common/clientinfo"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }

// TestEveryServiceIsLabelled: each service of the registration gets the labels of the
// environment, a label it has already is kept, the caller's record is unchanged.
func TestEveryServiceIsLabelled(t *testing.T) {
	rec := checks.NewNSE()
	chain := next.Chain(clientinfo.NewNSE(env(map[string]string{"NODE_NAME": "node-1", "CLUSTER_NAME": "c1"})), rec)
	in := &registry.NetworkServiceEndpoint{
		Name: "nse", NetworkServiceNames: []string{"a", "b"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"b": {Labels: map[string]string{"nodeName": "mine"}}},
	}
	got, err := chain.Register(context.Background(), in)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"nodeName": "node-1", "clusterName": "c1"}, got.GetNetworkServiceLabels()["a"].GetLabels())
	require.Equal(t, map[string]string{"nodeName": "mine", "clusterName": "c1"}, got.GetNetworkServiceLabels()["b"].GetLabels())
	require.Nil(t, in.GetNetworkServiceLabels()["a"], "the caller's record is left alone")
	require.Equal(t, map[string]string{"nodeName": "mine"}, in.GetNetworkServiceLabels()["b"].GetLabels())
	require.NoError(t, chain.Unregister(context.Background(), got))
}

func TestNothingSetAddsNothing(t *testing.T) {
	chain := next.Chain(clientinfo.NewNSE(env(nil)), checks.NewNSE())
	got, err := chain.Register(context.Background(), &registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{"a"}})
	require.NoError(t, err)
	require.Nil(t, got.GetNetworkServiceLabels())
}
