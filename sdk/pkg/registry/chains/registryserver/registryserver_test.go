package registryserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

var td = spiffeid.RequireTrustDomainFromString("vwire.test")

func id(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/"+name) }

// mesh is a trust domain with a registry served over mutual TLS on a unix socket.
type mesh struct {
	t        testing.TB
	ctx      context.Context
	ca       *spiffe.CA
	dir      string
	registry *url.URL
}

func newMesh(t testing.TB) *mesh {
	ctx, cancel := context.WithCancel(context.Background())
	ca, err := spiffe.NewCA(td)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	m := &mesh{t: t, ctx: ctx, ca: ca, dir: dir}
	src := m.source("registry")
	reg := registryserver.New(registryserver.WithName(id("registry").String()),
		registryserver.WithAuthorizeOptions(authorize.WithIdentity(src)))
	m.registry = m.serve("registry", src, reg)
	t.Cleanup(func() {
		cancel()
		_ = os.RemoveAll(dir)
	})
	return m
}

func (m *mesh) source(name string) spiffe.Source {
	src, err := m.ca.Source(id(name), time.Hour)
	require.NoError(m.t, err)
	return src
}

// serve serves r over mTLS with src's SVID (without TLS if src is nil) until the test ends.
func (m *mesh) serve(name string, src spiffe.Source, r grpcserve.Registrar) *url.URL {
	u := &url.URL{Scheme: "unix", Path: filepath.Join(m.dir, name+".sock")}
	ctx, cancel := context.WithCancel(m.ctx)
	var opts []grpc.ServerOption
	if src != nil {
		opts = append(opts, grpc.Creds(spiffe.ServerCredentials(src)))
	}
	errs, err := grpcserve.Serve(ctx, u, r, opts...)
	require.NoError(m.t, err)
	m.t.Cleanup(func() {
		cancel()
		for range errs { // until the server stopped
		}
	})
	return u
}

// dial connects to u as src's SVID, sending gen's tokens.
func (m *mesh) dial(u *url.URL, src spiffe.Source, gen token.GeneratorFunc) *grpc.ClientConn {
	cc, err := client.Dial(u, grpc.WithTransportCredentials(spiffe.ClientCredentials(src)),
		grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))
	require.NoError(m.t, err)
	m.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (m *mesh) tokens(src spiffe.Source, opts ...token.Option) token.GeneratorFunc {
	gen, err := spiffe.Tokens(src, time.Minute, opts...)
	require.NoError(m.t, err)
	return gen
}

// as returns the registry client chain (chains/client) to u of the workload name, with its own
// SVID and tokens.
func (m *mesh) as(name string, u *url.URL) next.NSE {
	src := m.source(name)
	return client.NewNSE(m.ctx, m.dial(u, src, m.tokens(src)), name)
}

// nsmgr serves an nsmgr's registry side: it authorizes its callers and passes their
// registrations on to the registry with the path.
func (m *mesh) nsmgr() *url.URL {
	src := m.source("nsmgr")
	cc := m.dial(m.registry, src, m.tokens(src))
	chain := next.Chain(
		updatepath.NewNSE(id("nsmgr").String()),
		begin.NewNSE(),
		authorize.NewNSE(authorize.WithIdentity(src)),
		connect.NewNSE(cc),
	)
	return m.serve("nsmgr", src, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(chain))
	}))
}

// find returns the name and URL of the registrations of name, as Find gives them.
func (m *mesh) find(name string) []string {
	var found []string
	err := m.as("reader", m.registry).Find(m.ctx, &next.Query[*nse]{Record: &nse{Name: name}}, func(ev *next.Event[*nse]) error {
		found = append(found, ev.Record.GetName()+" "+ev.Record.GetUrl())
		return nil
	})
	require.NoError(m.t, err)
	return found
}

func endpoint(name, url string) *nse {
	return &nse{Name: name, NetworkServiceNames: []string{"icmp"}, Url: url}
}

func TestOnlyTheRegistrant(t *testing.T) {
	m := newMesh(t)
	alice, bob := m.as("alice", m.registry), m.as("bob", m.registry)
	_, err := alice.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.NoError(t, err)

	_, err = bob.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:6666"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "re-registering another's name: %v", err)
	require.ErrorContains(t, err, `policy owner: endpoint "nse-a" is registered by spiffe://vwire.test/alice; spiffe://vwire.test/bob may not change it`)
	err = bob.Unregister(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "unregistering another's registration: %v", err)
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, m.find("nse-a"), "nothing changed")

	_, err = alice.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5002"))
	require.NoError(t, err, "the owner updates its registration")
	require.NoError(t, alice.Unregister(m.ctx, endpoint("nse-a", "tcp://[::1]:5002")))
	_, err = bob.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:6666"))
	require.NoError(t, err, "a name unregistered is free again")
	require.NoError(t, bob.Unregister(m.ctx, endpoint("nse-a", "")))
}

func TestServicesOfTheirEndpoints(t *testing.T) {
	m := newMesh(t)
	service := func(name string) next.NS {
		src := m.source(name)
		return client.NewNS(m.ctx, m.dial(m.registry, src, m.tokens(src)), name)
	}
	alice, bob, mallory := service("alice"), service("bob"), service("mallory")
	for _, reg := range []next.NS{alice, bob} {
		ns, err := reg.Register(m.ctx, &registry.NetworkService{Name: "icmp"})
		require.NoError(t, err, "both endpoints of the service register it")
		require.Equal(t, "IP", ns.GetPayload(), "it gets the default payload")
	}
	err := mallory.Unregister(m.ctx, &registry.NetworkService{Name: "icmp"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "may not unregister it")
	require.NoError(t, bob.Unregister(m.ctx, &registry.NetworkService{Name: "icmp"}))
}

func TestTransportRefusesStrangers(t *testing.T) {
	m := newMesh(t)
	_, err := m.as("alice", m.registry).Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.NoError(t, err)

	other, err := spiffe.NewCA(spiffeid.RequireTrustDomainFromString("elsewhere.test"))
	require.NoError(t, err)
	foreign, err := other.Source(spiffeid.RequireFromString("spiffe://elsewhere.test/alice"), time.Hour)
	require.NoError(t, err)
	noSVID, err := client.Dial(m.registry) // no TLS at all
	require.NoError(t, err)
	t.Cleanup(func() { _ = noSVID.Close() })

	for name, cc := range map[string]*grpc.ClientConn{
		"a client without an SVID":          noSVID,
		"an SVID from another trust domain": m.dial(m.registry, foreign, m.tokens(foreign)),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
			defer cancel()
			err := connect.NewNSE(cc).Unregister(ctx, endpoint("nse-a", ""))
			require.Equal(t, codes.Unavailable, status.Code(err), "the handshake fails: %v", err)
		})
	}
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, m.find("nse-a"))
}

func TestForgedTokens(t *testing.T) {
	m := newMesh(t)
	_, err := m.as("alice", m.registry).Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.NoError(t, err)
	aliceSVID, err := m.source("alice").GetX509SVID()
	require.NoError(t, err)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	mallory := m.source("mallory")
	past := clock.NewFake(time.Now().Add(-time.Hour))

	for _, tc := range []struct {
		name string
		gen  token.GeneratorFunc
		says string
	}{
		{"a token signed by another key", token.NewSigned(func() (crypto.Signer, []*x509.Certificate, error) {
			return otherKey, aliceSVID.Certificates, nil // alice's chain, not alice's key
		}, id("alice").String(), time.Minute), "policy signed: segment 0: the token cannot be trusted"},
		{"a token of another identity than the peer's", m.tokens(m.source("alice")), "the caller's token is signed by spiffe://vwire.test/alice, but the caller presented the SVID of spiffe://vwire.test/mallory"},
		{"a replayed token after expiry", m.tokens(mallory, token.WithClock(past)), "policy tokens: segment 0: the token of spiffe://vwire.test/mallory expired at"},
		{"an insecure token", token.NewInsecure(time.Minute, token.WithName(id("alice").String())), "policy signed: segment 0: the token cannot be trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := connect.NewNSE(m.dial(m.registry, mallory, tc.gen))
			err := reg.Unregister(m.ctx, endpoint("nse-a", ""))
			require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tc.says)
			_, err = reg.Register(m.ctx, endpoint("nse-m", "tcp://[::1]:6666"))
			require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		})
	}
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, m.find("nse-a"))
	require.Empty(t, m.find("nse-m"))
}

func TestThroughAnNsmgr(t *testing.T) {
	m := newMesh(t)
	nsmgr := m.nsmgr()
	alice, bob := m.as("alice", nsmgr), m.as("bob", nsmgr)
	got, err := alice.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.NoError(t, err)
	require.Equal(t, []string{id("alice").String(), id("nsmgr").String(), id("registry").String()}, got.GetPathIds(),
		"the verified path")

	// The registrant is alice, not the nsmgr: bob may not take the name through the same nsmgr,
	// nor the nsmgr by itself; alice may, even directly.
	_, err = bob.Register(m.ctx, endpoint("nse-a", "tcp://[::1]:6666"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, codes.PermissionDenied, status.Code(bob.Unregister(m.ctx, endpoint("nse-a", ""))))
	err = m.as("nsmgr", m.registry).Unregister(m.ctx, endpoint("nse-a", ""))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "registered by spiffe://vwire.test/alice; spiffe://vwire.test/nsmgr may not")
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, m.find("nse-a"))
	require.NoError(t, m.as("alice", m.registry).Unregister(m.ctx, endpoint("nse-a", "")))
}

func TestAForwarderCannotImpersonateAnother(t *testing.T) {
	m := newMesh(t)
	nsmgr := m.nsmgr()
	forwarder := func(name string) *nse {
		return &nse{Name: name, NetworkServiceNames: []string{"forwarder"}, Url: "unix:///" + name + ".sock"}
	}
	_, err := m.as("forwarder-a", nsmgr).Register(m.ctx, forwarder("forwarder-a"))
	require.NoError(t, err)
	_, err = m.as("forwarder-b", nsmgr).Register(m.ctx, forwarder("forwarder-a"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "registered by spiffe://vwire.test/forwarder-a")
	require.Equal(t, []string{"forwarder-a unix:///forwarder-a.sock"}, m.find("forwarder-a"))
}

// TestAPathOfTokensNotSentToTheCaller: mallory holds a token alice addressed to the nsmgr and
// sends it as the path before its own: the chain of audiences is broken.
func TestAPathOfTokensNotSentToTheCaller(t *testing.T) {
	m := newMesh(t)
	_, err := m.as("alice", m.registry).Register(m.ctx, endpoint("nse-a", "tcp://[::1]:5001"))
	require.NoError(t, err)
	aliceToNsmgr, _, err := m.tokens(m.source("alice"), token.WithAudience(id("nsmgr").String()))(nil)
	require.NoError(t, err)
	wire, err := json.Marshal(&updatepath.Path{Index: 1, Segments: []*updatepath.Segment{{Token: aliceToNsmgr}}})
	require.NoError(t, err)

	mallory := m.source("mallory")
	ctx := metadata.AppendToOutgoingContext(m.ctx, updatepath.MetadataKey, string(wire))
	err = connect.NewNSE(m.dial(m.registry, mallory, m.tokens(mallory))).Unregister(ctx, endpoint("nse-a", ""))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "policy path: segment 0: the token of spiffe://vwire.test/alice is addressed to [\"spiffe://vwire.test/nsmgr\"], not to spiffe://vwire.test/mallory who passed it on")
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, m.find("nse-a"))
}

func TestInsecure(t *testing.T) {
	reg := registryserver.New() // insecure: owners by the registrant's claim
	ctx := context.Background()
	for _, who := range []string{"nse-a", "nse-b"} {
		ns, err := reg.NS.Register(ctx, &registry.NetworkService{Name: "icmp", PathIds: []string{who}})
		require.NoError(t, err, who)
		require.Equal(t, "IP", ns.GetPayload(), "services get the default payload")
	}
	got, err := reg.NSE.Register(ctx, &nse{Name: "nse-a", Url: "tcp://[::1]:5001", PathIds: []string{"nse-a"}})
	require.NoError(t, err)
	require.NotNil(t, got.GetExpirationTime(), "a registration without expiry gets the default lifetime")
	intruder := &nse{Name: "nse-a", Url: "tcp://[::1]:6666", PathIds: []string{"mallory"}}
	_, err = reg.NSE.Register(ctx, intruder)
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, codes.PermissionDenied, status.Code(reg.NSE.Unregister(ctx, intruder)))

	// A registration that names nobody is anonymous, not the registry's own.
	_, err = reg.NSE.Register(ctx, &nse{Name: "nse-anon", Url: "tcp://[::1]:5002"})
	require.NoError(t, err)
	_, err = reg.NSE.Register(ctx, &nse{Name: "nse-anon", Url: "tcp://[::1]:5002", PathIds: []string{"registry"}})
	require.NoError(t, err)
	err = reg.NSE.Unregister(ctx, &nse{Name: "nse-anon", PathIds: []string{"nse-a"}})
	require.ErrorContains(t, err, `"nse-anon" is registered by an anonymous caller; "nse-a" may not`)
}

// BenchmarkRefresh registers one endpoint again and again over gRPC on a unix socket, as its
// refresh does: with mutual TLS and verified tokens, and without identities.
func BenchmarkRefresh(b *testing.B) {
	b.Run("mTLS and tokens", func(b *testing.B) {
		m := newMesh(b)
		refresh(b, m.ctx, m.as("alice", m.registry))
	})
	b.Run("insecure", func(b *testing.B) {
		m := newMesh(b)
		u := m.serve("insecure", nil, registryserver.New())
		cc, err := client.Dial(u, grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(token.NewInsecure(time.Minute, token.WithName("alice")))))
		require.NoError(b, err)
		b.Cleanup(func() { _ = cc.Close() })
		refresh(b, m.ctx, client.NewNSE(m.ctx, cc, "alice"))
	})
}

func refresh(b *testing.B, ctx context.Context, reg next.NSE) {
	rec := endpoint("nse-a", "tcp://[::1]:5001")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Register(ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
}
