package cmdtest

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// TrustDomain is the trust domain of a test binary's processes.
var TrustDomain = spiffeid.RequireTrustDomainFromString("cmdtest.vwire")

// svidLifetime is how long the SVIDs of a test last: longer than any test.
const svidLifetime = time.Hour

var ca = sync.OnceValues(func() (*spiffe.CA, error) { return spiffe.NewCA(TrustDomain) })

// CA is the certificate authority of TrustDomain, for a test that issues SVIDs of its own.
func CA(t testing.TB) *spiffe.CA {
	t.Helper()
	ca, err := ca()
	if err != nil {
		t.Fatalf("cmdtest: %v", err)
	}
	return ca
}

// ID is the SPIFFE ID of name (a path under TrustDomain: "nsmgr/nsmgr-1").
func ID(t testing.TB, name string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromPath(TrustDomain, "/"+strings.Trim(name, "/"))
	if err != nil {
		t.Fatalf("cmdtest: SPIFFE ID of %q: %v", name, err)
	}
	return id
}

// Identity writes the files of an SVID of name (ID) into a new folder, removed when the test
// ends, and returns the variable that gives them to a command: NSM_IDENTITY_DIR=<folder>.
func Identity(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vw-id")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := CA(t).WriteFiles(filepath.Join(dir, "svid"), ID(t, name), svidLifetime); err != nil {
		t.Fatalf("cmdtest: %v", err)
	}
	return "NSM_IDENTITY_DIR=" + filepath.Join(dir, "svid")
}

// Source returns an identity source of name, for the test's own clients and servers.
func Source(t testing.TB, name string) spiffe.Source {
	t.Helper()
	src, err := CA(t).Source(ID(t, name), svidLifetime)
	if err != nil {
		t.Fatalf("cmdtest: %v", err)
	}
	return src
}

// DialOptions are the dial options of a test's client named name: mutual TLS in TrustDomain.
func DialOptions(t testing.TB, name string) []grpc.DialOption {
	t.Helper()
	return []grpc.DialOption{grpc.WithTransportCredentials(spiffe.ClientCredentials(Source(t, name)))}
}

// RegistryDialOptions are DialOptions and the tokens of name sent with every call, as a registry
// client's connection carries them.
func RegistryDialOptions(t testing.TB, name string) []grpc.DialOption {
	t.Helper()
	return append(DialOptions(t, name), grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(Tokens(t, name, svidLifetime))))
}

// ServerOptions are the server options of a test's server named name: mutual TLS in TrustDomain.
func ServerOptions(t testing.TB, name string) []grpc.ServerOption {
	t.Helper()
	return []grpc.ServerOption{grpc.Creds(spiffe.ServerCredentials(Source(t, name)))}
}

// processName is the name of the identity Start gives a process of bin: the binary's, and
// NSM_NAME's when it is a valid SPIFFE ID path segment.
func processName(bin string, env []string) string {
	name := filepath.Base(bin)
	for _, v := range env {
		if n, ok := strings.CutPrefix(v, "NSM_NAME="); ok && spiffeid.ValidatePathSegment(n) == nil {
			name += "/" + n
		}
	}
	return name
}

// hasIdentity reports whether env names where a command's identity comes from.
func hasIdentity(env []string) bool {
	for _, v := range env {
		for _, name := range []string{"SPIFFE_ENDPOINT_SOCKET=", "NSM_IDENTITY_DIR=", "NSM_INSECURE="} {
			if strings.HasPrefix(v, name) {
				return true
			}
		}
	}
	return false
}

// Tokens returns the token generator of a test's component named name: tokens lasting lifetime,
// signed with an SVID of name.
func Tokens(t testing.TB, name string, lifetime time.Duration) token.GeneratorFunc {
	t.Helper()
	gen, err := spiffe.Tokens(Source(t, name), lifetime)
	if err != nil {
		t.Fatalf("cmdtest: %v", err)
	}
	return gen
}
