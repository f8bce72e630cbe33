package nsurl_test

import (
	"net/url"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	apinsurl "vwire.dev/api/nsurl"
	"vwire.dev/sdk/pkg/tools/nsurl"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func nsURL(t *testing.T, s string) *nsurl.NSURL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return (*nsurl.NSURL)(u)
}

func TestReadsAsNSMs(t *testing.T) {
	u := nsURL(t, "kernel://vpn@corp.example/vpn0?app=web")
	require.NoError(t, u.Err())
	require.Equal(t, "vpn@corp.example", u.NetworkService())
	require.Equal(t, map[string]string{"app": "web"}, u.Labels())
	require.Equal(t, &networkservice.Mechanism{Cls: cls.LOCAL, Type: "KERNEL", Parameters: map[string]string{common.InterfaceNameKey: "vpn0"}}, u.Mechanism())

	bare := nsURL(t, "kernel://icmp-responder")
	require.Equal(t, "icmp-responder", bare.NetworkService())
	require.Equal(t, map[string]string{}, bare.Labels(), "a map to add to, as NSM's")
	require.Nil(t, bare.Mechanism().GetParameters())
}

// TestABadURLIsRefusedByName: what it reads as names it where the mesh refuses it.
func TestABadURLIsRefusedByName(t *testing.T) {
	u := nsURL(t, "kernel://icmp-responder/much-too-long-interface-name")
	verr := u.Err()
	require.Error(t, verr)
	_, want := apinsurl.Parse("kernel://icmp-responder/much-too-long-interface-name")
	require.Equal(t, want.Error(), verr.Error())
	require.Equal(t, "kernel://icmp-responder/much-too-long-interface-name", u.NetworkService())
	require.Empty(t, u.Labels())
	require.Equal(t, &networkservice.Mechanism{Cls: cls.LOCAL, Type: "KERNEL"}, u.Mechanism())
}

// FuzzNSURL: any URL reads without a panic; one that parses names its service and mechanism,
// and one that does not reads as its whole self for a service name, which the mesh refuses.
func FuzzNSURL(f *testing.F) {
	for _, s := range []string{"kernel://icmp-responder/nsm-1?app=web", "kernel://vpn@corp.example", "memif://x/", "kernel://", "://", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		n := (*nsurl.NSURL)(u)
		require.NotNil(t, n.Mechanism())
		if n.Err() != nil {
			require.Equal(t, u.String(), n.NetworkService())
			return
		}
		require.NotEmpty(t, n.NetworkService())
		require.NotEmpty(t, n.Mechanism().GetType())
		require.NotNil(t, n.Labels())
	})
}
