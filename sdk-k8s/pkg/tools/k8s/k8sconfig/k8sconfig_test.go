package k8sconfig_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk-k8s/pkg/tools/k8s/k8sconfig"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNamespace(t *testing.T) {
	var ns k8sconfig.Namespace
	require.NoError(t, ns.Decode("nsm-system"))
	require.Equal(t, k8sconfig.Namespace("nsm-system"), ns)

	for _, bad := range []string{"", "NSM", "nsm_system", "-nsm", "a.b"} {
		err := ns.Decode(bad)
		require.ErrorContains(t, err, "not a namespace name: ", "%q", bad)
		require.Equal(t, k8sconfig.Namespace("nsm-system"), ns, "a bad value changes nothing")
	}
}
