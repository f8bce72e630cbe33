package localbypass_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/localbypass"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type (
	nse   = registry.NetworkServiceEndpoint
	event = next.Event[*nse]
)

func urls(t *testing.T, e next.NSE, q *nse) map[string]string {
	t.Helper()
	got := map[string]string{}
	require.NoError(t, e.Find(context.Background(), &next.Query[*nse]{Record: q}, func(ev *event) error {
		got[ev.Record.GetName()] = ev.Record.GetUrl()
		return nil
	}))
	return got
}

func TestLocalEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name, nsmgr, own, other string
	}{
		{"IPv4", "tcp://10.0.0.1:5001", "tcp://127.0.0.1:5000", "tcp://10.0.0.2:5001"},
		{"IPv6", "tcp://[fd00::1]:5001", "tcp://[::1]:5000", "tcp://[fd00::2]:5001"},
		{"unix", "unix:///run/vw/nsmgr.sock", "unix:///run/vw/nse.sock", "tcp://[fd00::2]:5001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store, gate := memory.NewNSE(), inject.NewNSE(nil)
			nsmgr := next.Chain(localbypass.NewNSE(tc.nsmgr), next.NSE(gate), store)

			in := &nse{Name: "local", Url: tc.own, NetworkServiceNames: []string{"icmp"}}
			got, err := nsmgr.Register(ctx, in)
			require.NoError(t, err)
			require.Equal(t, tc.own, got.GetUrl(), "the registrant gets its own URL back")
			require.Equal(t, tc.own, in.GetUrl(), "the caller's record is left as it was")

			// Another nsmgr's endpoint, and one left with this nsmgr's URL from before a restart.
			for name, u := range map[string]string{"remote": tc.other, "stale": tc.nsmgr} {
				_, err = store.Register(ctx, &nse{Name: name, Url: u, NetworkServiceNames: []string{"icmp"}})
				require.NoError(t, err)
			}
			require.Equal(t, map[string]string{"local": tc.nsmgr, "remote": tc.other, "stale": tc.nsmgr}, urls(t, store, &nse{}),
				"the registry reaches the local endpoint through the nsmgr")
			require.Equal(t, map[string]string{"local": tc.own, "remote": tc.other}, urls(t, nsmgr, &nse{NetworkServiceNames: []string{"icmp"}}),
				"local callers get the endpoint's own URL; the stale one is dropped")

			// A refused update keeps the URL of the registration that stands.
			gate.FailRegisters(status.Error(codes.Unavailable, "registry down"))
			_, err = nsmgr.Register(ctx, &nse{Name: "local", Url: tc.other})
			require.Equal(t, codes.Unavailable, status.Code(err))
			_, err = nsmgr.Register(ctx, &nse{Name: "new", Url: tc.own})
			require.Equal(t, codes.Unavailable, status.Code(err))
			gate.FailRegisters(nil)
			require.Equal(t, tc.own, urls(t, nsmgr, &nse{Name: "local"})["local"])

			require.NoError(t, nsmgr.Unregister(ctx, &nse{Name: "local", Url: tc.own}))
			require.NoError(t, nsmgr.Unregister(ctx, &nse{Name: "stale"}), "an unknown endpoint's Unregister still reaches the registry")
			require.Equal(t, map[string]string{"remote": tc.other}, urls(t, store, &nse{}))
		})
	}
}

func TestWatchCarriesOwnURL(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nsmgr := next.Chain(localbypass.NewNSE("tcp://[fd00::1]:5001"), memory.NewNSE())
	_, err := nsmgr.Register(ctx, &nse{Name: "local", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)
	events, done := make(chan *event, 10), make(chan error, 1)
	go func() {
		done <- nsmgr.Find(ctx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *event) error {
			events <- ev
			return nil
		})
	}()
	ev := <-events // the current record
	require.False(t, ev.Deleted)
	require.Equal(t, "tcp://[::1]:5000", ev.Record.GetUrl())
	_, err = nsmgr.Register(ctx, &nse{Name: "local", Url: "tcp://127.0.0.1:5000"})
	require.NoError(t, err)
	ev = <-events // an update, while the nsmgr knows the endpoint
	require.Equal(t, "tcp://127.0.0.1:5000", ev.Record.GetUrl())

	require.NoError(t, nsmgr.Unregister(ctx, &nse{Name: "local"}))
	ev = <-events
	require.True(t, ev.Deleted, "a deletion is passed on, by name, even after the nsmgr forgot the endpoint")
	require.Equal(t, "local", ev.Record.GetName())
	cancel()
	require.NoError(t, <-done)
}

func TestRefused(t *testing.T) {
	nsmgr := next.Chain(localbypass.NewNSE("tcp://10.0.0.1:5001"), memory.NewNSE())
	_, err := nsmgr.Register(context.Background(), &nse{Name: "local"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), `endpoint "local" has no url`)
	require.NoError(t, nsmgr.Unregister(context.Background(), nil), "nothing to unregister; nothing panics")
	require.Panics(t, func() { localbypass.NewNSE("") })
	require.Panics(t, func() { localbypass.NewNSE("10.0.0.1") })
}
