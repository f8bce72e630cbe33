package selfregister_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/cmd-admission-webhook-k8s/internal/selfregister"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCertificateServesItsHostsOnly(t *testing.T) {
	cert, caPEM, err := selfregister.Certificate([]string{"webhook.nsm-system.svc", "webhook.nsm-system", "127.0.0.1"})
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM), "the caBundle is PEM")
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	require.False(t, leaf.IsCA, "the serving certificate signs nothing")
	verify := func(host string) error {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	for _, host := range []string{"webhook.nsm-system.svc", "webhook.nsm-system", "127.0.0.1"} {
		require.NoError(t, verify(host), host)
	}
	for _, host := range []string{"other.nsm-system.svc", "127.0.0.2", "webhook"} {
		require.Error(t, verify(host), host)
	}
	require.WithinDuration(t, time.Now().Add(selfregister.Validity), leaf.NotAfter, time.Minute)

	other, otherCA, err := selfregister.Certificate([]string{"webhook.nsm-system.svc"})
	require.NoError(t, err)
	require.NotEqual(t, caPEM, otherCA, "every start has a CA of its own")
	require.NotEqual(t, cert.Certificate[0], other.Certificate[0])
}
