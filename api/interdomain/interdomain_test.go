package interdomain_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/api/interdomain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSplitJoin(t *testing.T) {
	tests := []struct {
		name, local, domain string
		is                  bool
	}{
		{name: "icmp-responder", local: "icmp-responder"},
		{name: "vpn@corp.example", local: "vpn", domain: "corp.example", is: true},
		{name: "a@b@c", local: "a@b", domain: "c", is: true},
		{name: "ns@", local: "ns", is: true},
		{name: "@dom", domain: "dom", is: true},
		{name: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, domain := interdomain.Split(tt.name)
			require.Equal(t, tt.local, local)
			require.Equal(t, tt.domain, domain)
			require.Equal(t, tt.is, interdomain.Is(tt.name))
			if tt.domain != "" || !tt.is {
				require.Equal(t, tt.name, interdomain.Join(local, domain))
			}
		})
	}
}
