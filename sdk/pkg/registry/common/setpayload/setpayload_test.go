package setpayload_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/setpayload"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPayload(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []setpayload.Option
		given string
		want  string
	}{
		{"none given: IP", nil, "", payload.IP},
		{"given is kept", nil, payload.Ethernet, payload.Ethernet},
		{"default changed", []setpayload.Option{setpayload.WithDefault(payload.Ethernet)}, "", payload.Ethernet},
		{"given is kept over a changed default", []setpayload.Option{setpayload.WithDefault(payload.Ethernet)}, payload.IP, payload.IP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := memory.NewNS()
			chain := next.Chain(setpayload.NewNS(tc.opts...), store)
			in := &registry.NetworkService{Name: "icmp", Payload: tc.given}
			got, err := chain.Register(ctx, in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got.GetPayload())
			require.Equal(t, tc.given, in.GetPayload(), "the caller's record is left as it was")

			var stored []string
			require.NoError(t, chain.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{Payload: tc.want}},
				func(ev *next.Event[*registry.NetworkService]) error {
					stored = append(stored, ev.Record.GetName())
					return nil
				}))
			require.Equal(t, []string{"icmp"}, stored)
			require.NoError(t, chain.Unregister(ctx, in))
		})
	}
	_, err := setpayload.NewNS().Register(context.Background(), nil)
	require.NoError(t, err, "no record is not setpayload's business; nothing panics")
	require.Panics(t, func() { setpayload.WithDefault("") })
}
