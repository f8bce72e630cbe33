package ping_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPing: an address on the other end of a veth answers, in both families; one nobody has
// does not, and the error says so.
func TestPing(t *testing.T) {
	a, _ := nstest.New(t)
	b, _ := nstest.New(t)
	nstest.Veth(t, a, "v0", []string{"10.9.0.1/24", "fd09::1/64"}, b, "v0", []string{"10.9.0.2/24", "fd09::2/64"})
	require.NoError(t, ping.Ping(a, netip.MustParseAddr("10.9.0.2")))
	require.NoError(t, ping.Ping(b, netip.MustParseAddr("fd09::1")))
	err := ping.Ping(a, netip.MustParseAddr("10.9.0.3"))
	require.ErrorContains(t, err, "no echo reply")
}
