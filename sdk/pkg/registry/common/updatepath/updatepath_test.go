package updatepath_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPathIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"first hop", nil, []string{"nsmgr"}},
		{"next hop", []string{"nse"}, []string{"nse", "nsmgr"}},
		{"the same path again (refresh)", []string{"nse", "nsmgr"}, []string{"nse", "nsmgr"}},
		{"a record that went further before", []string{"nse", "nsmgr", "registry"}, []string{"nse", "nsmgr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			seen := checks.NewNSE()
			nseChain := next.Chain(updatepath.NewNSE("nsmgr"), next.NSE(seen))
			in := &registry.NetworkServiceEndpoint{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: tc.in}
			_, err := nseChain.Register(ctx, in)
			require.NoError(t, err)
			require.Equal(t, tc.want, seen.Registers()[0].Record.GetPathIds())
			require.Equal(t, tc.in, in.GetPathIds(), "the caller's record is left as it was")

			require.NoError(t, nseChain.Unregister(ctx, in))
			require.Equal(t, tc.want, seen.Unregisters()[0].Record.GetPathIds(), "Unregister too")

			seenNS := checks.NewNS()
			nsChain := next.Chain(updatepath.NewNS("nsmgr"), next.NS(seenNS))
			_, err = nsChain.Register(ctx, &registry.NetworkService{Name: "icmp", PathIds: tc.in})
			require.NoError(t, err)
			require.Equal(t, tc.want, seenNS.Registers()[0].Record.GetPathIds())
		})
	}
}

func TestThroughHopsToStore(t *testing.T) {
	ctx := context.Background()
	store := memory.NewNSE()
	nseClient := next.Chain(updatepath.NewNSE("nse-1"), updatepath.NewNSE("nsmgr-a"), updatepath.NewNSE("registry"), store)
	got, err := nseClient.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1", "nsmgr-a", "registry"}, got.GetPathIds())

	// A refresh of the record as returned takes the same path and keeps the same ids.
	got, err = nseClient.Register(ctx, got)
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1", "nsmgr-a", "registry"}, got.GetPathIds())

	_, err = nseClient.Register(ctx, nil)
	require.Error(t, err, "no record: the store refuses it, nothing panics")
}
