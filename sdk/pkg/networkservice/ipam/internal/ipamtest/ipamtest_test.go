package ipamtest_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFamiliesWriteTheirAddresses: the cases written once for both families get the addresses
// they mean.
func TestFamiliesWriteTheirAddresses(t *testing.T) {
	v4, v6 := ipamtest.Families[0], ipamtest.Families[1]
	require.Equal(t, "10.0.0.5/32", v4.Host(5))
	require.Equal(t, "fd00::5/128", v6.Host(5))
	require.Equal(t, "10.0.0.0/24", v4.Prefix(8))
	require.Equal(t, "fd00::/120", v6.Prefix(8))
	require.Equal(t, "10.0.0.4/30", v4.Addr(4, 2))
	require.Len(t, ipamtest.Prefixes("10.0.0.0/24", "fd00::/64"), 2)
}
