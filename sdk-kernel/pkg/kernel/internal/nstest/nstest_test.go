package nstest_test

import (
	"net/netip"
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestName(t *testing.T) {
	require.Regexp(t, regexp.MustCompile(`^vwg[0-9a-f]{8}$`), nstest.Name("vwg", 8))
	require.NotEqual(t, nstest.Name("x", 8), nstest.Name("x", 8))
}

// TestNamespace: New makes a namespace that nsfile's URL reaches, and it is gone after the test.
func TestNamespace(t *testing.T) {
	var name string
	t.Run("make", func(t *testing.T) {
		_, name = nstest.New(t)
		_, err := os.Stat("/var/run/netns/" + name)
		require.NoError(t, err)
		require.Equal(t, "file:///var/run/netns/"+name, nstest.URL(name))
	})
	_, err := os.Stat("/var/run/netns/" + name)
	require.ErrorIs(t, err, os.ErrNotExist, "removed when the test ended")
}

// TestDumpAndPing: a fresh namespace has only its loopback; a veth pair carries pings both ways.
func TestDumpAndPing(t *testing.T) {
	a, _ := nstest.New(t)
	b, _ := nstest.New(t)
	require.Equal(t, "links:\n  lo device down mtu 65536\naddresses:\nroutes:\nrules:\nneighbours:\ntc:\n", nstest.Dump(t, a))
	nstest.Veth(t, a, "a0", []string{"10.1.0.1/24", "fd00:1::1/64"}, b, "b0", []string{"10.1.0.2/24", "fd00:1::2/64"})
	nstest.Golden(t, nstest.Dump(t, a))
	require.NoError(t, ping.Ping(a, netip.MustParseAddr("10.1.0.2")))
	require.NoError(t, ping.Ping(b, netip.MustParseAddr("fd00:1::1")))
}
