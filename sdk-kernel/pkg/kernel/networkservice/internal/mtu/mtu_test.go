package mtu_test

import (
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/internal/mtu"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLower(t *testing.T) {
	for _, tt := range []struct {
		name      string
		conn      *networkservice.Connection
		mtu, want uint32
	}{
		{"no context", &networkservice.Connection{}, 1420, 1420},
		{"no MTU", &networkservice.Connection{Context: &networkservice.ConnectionContext{}}, 1420, 1420},
		{"larger", &networkservice.Connection{Context: &networkservice.ConnectionContext{MTU: 1500}}, 1450, 1450},
		{"smaller stays", &networkservice.Connection{Context: &networkservice.ConnectionContext{MTU: 1400}}, 1450, 1400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mtu.Lower(tt.conn, tt.mtu)
			require.Equal(t, tt.want, tt.conn.GetContext().GetMTU())
		})
	}
}
