// Package ipamtest holds what the tests of the IPAM elements share: the chain an element is
// tested in, the addresses of each family for cases written once for IPv4 and IPv6, and a check
// of gRPC errors.
package ipamtest

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
)

// Family writes the addresses of one family: the n-th address from the start of the space.
type Family struct {
	Name string
	Base string // the first address without its last number: "10.0.0." or "fd00::"
	Bits int    // 32 or 128
}

// Families are the two the cases run for.
var Families = []Family{{"IPv4", "10.0.0.", 32}, {"IPv6", "fd00::", 128}}

// Addr is the n-th address with the prefix length of a subnet of hostBits host bits.
func (f Family) Addr(n, hostBits int) string {
	return netip.MustParsePrefix(fmt.Sprintf("%s%d/%d", f.Base, n, f.Bits-hostBits)).String()
}

// Host is the n-th address as a host prefix (/32, /128).
func (f Family) Host(n int) string { return f.Addr(n, 0) }

// Prefix is the prefix at the start of the space with hostBits host bits.
func (f Family) Prefix(hostBits int) string { return f.Addr(0, hostBits) }

// Prefixes parses CIDRs.
func Prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Env is the chain an IPAM is tested in: metadata, the IPAM, an element that fails on demand.
type Env struct {
	Fail  *inject.Errors
	Chain networkservice.NetworkServiceServer
}

// NewEnv returns the chain around ipam.
func NewEnv(ipam networkservice.NetworkServiceServer) *Env {
	e := &Env{Fail: inject.NewServer(nil)}
	e.Chain = chain.NewNetworkServiceServer(metadata.NewServer(), ipam, e.Fail)
	return e
}

// Request requests a new connection id with ipc as its IP context.
func (e *Env) Request(id string, ipc *networkservice.IPContext) (*networkservice.Connection, error) {
	return e.Chain.Request(context.Background(), &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: id, Context: &networkservice.ConnectionContext{IpContext: ipc}},
	})
}

// Refresh requests conn again, as begin would, after edit changed its IP context.
func (e *Env) Refresh(conn *networkservice.Connection, edit func(*networkservice.IPContext)) (*networkservice.Connection, error) {
	conn = conn.Clone()
	if edit != nil {
		edit(conn.GetContext().GetIpContext())
	}
	return e.Chain.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
}

// Close closes conn.
func (e *Env) Close(t testing.TB, conn *networkservice.Connection) {
	t.Helper()
	_, err := e.Chain.Close(context.Background(), conn.Clone())
	require.NoError(t, err)
}

// Excluding is an IP context with these excluded prefixes.
func Excluding(prefixes ...string) *networkservice.IPContext {
	return &networkservice.IPContext{ExcludedPrefixes: prefixes}
}

// RequireCode checks that err is a gRPC status of code whose message contains each of contains.
func RequireCode(t testing.TB, err error, code codes.Code, contains ...string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	for _, c := range contains {
		require.Contains(t, status.Convert(err).Message(), c)
	}
}

// RequirePanic checks that f panics with a message that contains each of contains.
func RequirePanic(t testing.TB, f func(), contains ...string) {
	t.Helper()
	defer func() {
		t.Helper()
		msg, _ := recover().(string)
		for _, c := range contains {
			require.Contains(t, msg, c)
		}
	}()
	f()
}
