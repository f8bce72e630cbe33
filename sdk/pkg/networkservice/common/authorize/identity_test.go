package authorize_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

var td = spiffeid.RequireTrustDomainFromString("mesh.test")

// mesh is a trust domain with an SVID for each hop name, and a stranger CA of the same domain
// whose SVIDs no hop trusts.
type mesh struct {
	ca, stranger *spiffe.CA
	hops         map[string]spiffe.Source
}

func newMesh(t testing.TB, names ...string) *mesh {
	t.Helper()
	m := &mesh{ca: must(spiffe.NewCA(td)), stranger: must(spiffe.NewCA(td)), hops: map[string]spiffe.Source{}}
	for _, name := range names {
		m.hops[name] = must(m.ca.Source(idOf(name), time.Hour))
	}
	return m
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func idOf(name string) spiffeid.ID { return spiffeid.RequireFromPath(td, "/"+name) }

// token is a token of hop from addressed to hop to, made at at and lasting a minute.
func (m *mesh) token(from, to string, at time.Time) string {
	return tokenOf(m.hops[from], to, at)
}

// forged is a token of an SVID of the stranger CA naming hop from.
func (m *mesh) forged(from, to string) string {
	return tokenOf(must(m.stranger.Source(idOf(from), time.Hour)), to, now)
}

func tokenOf(src spiffe.Source, to string, at time.Time) string {
	gen := must(spiffe.Tokens(src, time.Minute, token.WithClock(clock.NewFake(at)), token.WithAudience(idOf(to).String())))
	tok, _, err := gen(nil)
	if err != nil {
		panic(err)
	}
	return tok
}

// from is a context at t whose call came over mutual TLS from hop name ("" without TLS).
func (m *mesh) from(t time.Time, name string) context.Context {
	ctx := at(t)
	if name == "" {
		return ctx
	}
	svid := must(m.hops[name].GetX509SVID())
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{svid.Certificates[0]}},
	}})
}

// seg is a segment of hop name with ID id and token tok, expiring with it.
func seg(name, id, tok string) *networkservice.PathSegment {
	return &networkservice.PathSegment{Name: name, Id: id, Token: tok, Expires: timestamppb.New(now.Add(time.Minute))}
}

// atFwd is the path of a Request at the forwarder (index 2) with the client's and the manager's
// tokens.
func atFwd(nscTok, nsmgrTok string) *networkservice.NetworkServiceRequest {
	return request(2, seg("nsc", "a", nscTok), seg("nsmgr", "b", nsmgrTok), seg("fwd", "c", ""))
}

// secureServers are the forwarder's authorize with its identity: with the default policies (the
// Go shortcut first) and with the same policies named (OPA alone decides).
func secureServers(m *mesh) map[string]networkservice.NetworkServiceServer {
	return map[string]networkservice.NetworkServiceServer{
		"defaults": authorize.NewServer(authorize.WithIdentity(m.hops["fwd"])),
		"named":    authorize.NewServer(authorize.WithIdentity(m.hops["fwd"]), authorize.WithPolicyFS(authorize.Defaults, "*.rego")),
	}
}

func TestIdentityPolicies(t *testing.T) {
	m := newMesh(t, "nsc", "nsmgr", "nsmgr-2", "fwd", "fwd-2")
	good := atFwd(m.token("nsc", "nsmgr", now), m.token("nsmgr", "fwd", now))
	tests := []policyCase{
		{name: "valid path", ctx: m.from(now, "nsmgr"), req: good},
		{
			name: "no mutual TLS",
			ctx:  m.from(now, ""),
			req:  good,
			deny: "policy signed: this hop (spiffe://mesh.test/fwd) takes calls over mutual TLS only: the caller presented no certificate",
		},
		{
			name: "caller is not the previous hop",
			ctx:  m.from(now, "nsc"),
			req:  good,
			deny: "policy signed: segment 1 (nsmgr): the token is signed by spiffe://mesh.test/nsmgr, not by the caller spiffe://mesh.test/nsc",
		},
		{
			name: "token addressed to another hop",
			ctx:  m.from(now, "nsmgr"),
			req:  atFwd(m.token("nsc", "nsmgr", now), m.token("nsmgr", "fwd-2", now)),
			deny: `policy chained: segment 1 (nsmgr): the token is addressed to {"spiffe://mesh.test/fwd-2"}, not to the next hop spiffe://mesh.test/fwd`,
		},
		{
			name: "earlier token addressed to another hop",
			ctx:  m.from(now, "nsmgr"),
			req:  atFwd(m.token("nsc", "nsmgr-2", now), m.token("nsmgr", "fwd", now)),
			deny: `policy chained: segment 0 (nsc): the token is addressed to {"spiffe://mesh.test/nsmgr-2"}, not to the next hop spiffe://mesh.test/nsmgr`,
		},
		{
			name: "replayed after expiry",
			ctx:  m.from(now.Add(2*time.Minute), "nsmgr"),
			req:  good,
			deny: "policy tokens: segment 0 (nsc): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:02:00Z); " +
				"policy tokens: segment 1 (nsmgr): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:02:00Z)",
		},
		{
			name: "first hop",
			ctx:  m.from(now, "nsmgr"),
			req:  request(0, seg("fwd", "c", "")),
			deny: "policy signed: this hop's segment is the first of the path: no caller signed it",
		},
	}
	checkCases(t, secureServers(m), tests)
}

// TestUntrustedTokens checks tokens no hop can trust: signed by a key of another CA naming the
// right hop, insecure ones, none. The reasons name the Verifier's findings, which are its own.
func TestUntrustedTokens(t *testing.T) {
	m := newMesh(t, "nsc", "nsmgr", "fwd")
	tests := []struct {
		name string
		req  *networkservice.NetworkServiceRequest
		deny []string // parts of the message
	}{
		{
			name: "previous hop's token signed by another key",
			req:  atFwd(m.token("nsc", "nsmgr", now), m.forged("nsmgr", "fwd")),
			deny: []string{"policy signed: segment 1 (nsmgr): the token cannot be trusted: token: ", "x5c certificates are not an SVID of a trusted domain"},
		},
		{
			name: "earlier token signed by another key",
			req:  atFwd(m.forged("nsc", "nsmgr"), m.token("nsmgr", "fwd", now)),
			deny: []string{"policy signed: segment 0 (nsc): the token cannot be trusted: token: "},
		},
		{
			name: "insecure token",
			req:  atFwd(m.token("nsc", "nsmgr", now), insecure("nsmgr")),
			deny: []string{"policy signed: segment 1 (nsmgr): the token cannot be trusted: token: ", "policy chained: segment 1 (nsmgr): the token is addressed to set(), not to the next hop spiffe://mesh.test/fwd"},
		},
		{
			name: "no token",
			req:  atFwd(m.token("nsc", "nsmgr", now), ""),
			deny: []string{"policy tokens: segment 1 (nsmgr): no token", "policy signed: segment 1 (nsmgr): the token cannot be trusted"},
		},
	}
	for name, s := range secureServers(m) {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				rec := checks.NewServer()
				_, err := next.NewNetworkServiceServer(s, rec).Request(m.from(now, "nsmgr"), tt.req)
				require.Equal(t, codes.PermissionDenied, status.Code(err))
				for _, part := range tt.deny {
					require.Contains(t, status.Convert(err).Message(), part)
				}
				require.Empty(t, rec.Requests())
			})
		}
	}
}

// insecure is an insecure token naming hop name's SPIFFE ID.
func insecure(name string) string { return signed(idOf(name).String(), "", time.Minute).GetToken() }

// TestOnlyTheOwnerRefreshesAndItsPathCloses follows one connection at the forwarder: its owner
// nsc makes it through nsmgr; nsc-2, a client of the same manager that learned the connection's
// IDs, tries to refresh it as its own and to close it; then nsc refreshes and, after its tokens
// expired, closes it through its manager.
func TestOnlyTheOwnerRefreshesAndItsPathCloses(t *testing.T) {
	m := newMesh(t, "nsc", "nsc-2", "nsmgr", "fwd")
	for name, s := range secureServers(m) {
		t.Run(name, func(t *testing.T) {
			rec := checks.NewServer()
			chain := next.NewNetworkServiceServer(s, rec)
			owned := atFwd(m.token("nsc", "nsmgr", now), m.token("nsmgr", "fwd", now))
			_, err := chain.Request(m.from(now, "nsmgr"), owned)
			require.NoError(t, err)

			// A refresh in another client's name, through the same manager.
			stolen := atFwd(m.token("nsc-2", "nsmgr", now), m.token("nsmgr", "fwd", now))
			_, err = chain.Request(m.from(now, "nsmgr"), stolen)
			require.Equal(t, codes.PermissionDenied, status.Code(err))
			require.Equal(t, "authorize: policy owner: connection c belongs to spiffe://mesh.test/nsc, not to spiffe://mesh.test/nsc-2",
				status.Convert(err).Message())

			// Closes by hops that are not on the connection's path, one with an expired token.
			for _, caller := range []string{"nsc-2", "fwd"} {
				_, err = chain.Close(m.from(now.Add(time.Hour), caller), stolen.GetConnection())
				require.Equal(t, codes.PermissionDenied, status.Code(err), caller)
				require.Equal(t, "authorize: connection c belongs to spiffe://mesh.test/nsc "+
					"(its path to this hop: [spiffe://mesh.test/nsc spiffe://mesh.test/nsmgr]); spiffe://mesh.test/"+caller+" may not close it",
					status.Convert(err).Message())
			}
			require.Len(t, rec.Requests(), 1, "nothing refused reached the next element")
			require.Empty(t, rec.Closes())
			require.Equal(t, []string{"c"}, rec.Open())

			// The owner's refresh still works; its Close passes after its tokens expired.
			refresh := atFwd(m.token("nsc", "nsmgr", now.Add(10*time.Second)), m.token("nsmgr", "fwd", now.Add(10*time.Second)))
			_, err = chain.Request(m.from(now.Add(10*time.Second), "nsmgr"), refresh)
			require.NoError(t, err)
			_, err = chain.Close(m.from(now.Add(time.Hour), "nsmgr"), refresh.GetConnection())
			require.NoError(t, err)
			require.Len(t, rec.Closes(), 1)
			require.Empty(t, rec.Open())

			// Closed, the connection is forgotten: its ID may serve another client.
			_, err = chain.Request(m.from(now, "nsmgr"), stolen)
			require.NoError(t, err)
		})
	}
}

// TestCloseByTheOwnerItself: the client, first hop of the path, may close its connection at
// any hop that knows it (a manager restarting lets it reach the forwarder directly).
func TestCloseByTheOwnerItself(t *testing.T) {
	m := newMesh(t, "nsc", "nsmgr", "fwd")
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(authorize.NewServer(authorize.WithIdentity(m.hops["fwd"])), rec)
	req := atFwd(m.token("nsc", "nsmgr", now), m.token("nsmgr", "fwd", now))
	_, err := chain.Request(m.from(now, "nsmgr"), req)
	require.NoError(t, err)
	_, err = chain.Close(m.from(now.Add(time.Hour), "nsc"), req.GetConnection())
	require.NoError(t, err)
	require.Len(t, rec.Closes(), 1)
}

// TestCloseOfUnknownOrInProcess: a Close of a connection this hop does not know passes (nothing
// of anyone's is at stake, and a restarted hop must let its clients clean up), and so does a
// Close without mutual TLS, which only the component itself can make (timeout, with the
// context of the last Request, has the caller's peer anyway).
func TestCloseOfUnknownOrInProcess(t *testing.T) {
	m := newMesh(t, "nsc", "nsc-2", "nsmgr", "fwd")
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(authorize.NewServer(authorize.WithIdentity(m.hops["fwd"])), rec)
	req := atFwd(m.token("nsc", "nsmgr", now), m.token("nsmgr", "fwd", now))
	_, err := chain.Close(m.from(now, "nsc-2"), req.GetConnection())
	require.NoError(t, err, "unknown connection")

	_, err = chain.Request(m.from(now, "nsmgr"), req)
	require.NoError(t, err)
	_, err = chain.Close(m.from(now.Add(time.Hour), ""), req.GetConnection())
	require.NoError(t, err, "in-process")
	require.Len(t, rec.Closes(), 2)
}

// TestInsecureMeshStillWorks: without an identity the signature policies judge nothing, and
// anyone may close: the mesh of before, for meshes that run without SPIFFE.
func TestInsecureMeshStillWorks(t *testing.T) {
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(authorize.NewServer(), rec)
	req := request(2, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Minute), signed("fwd", "c", time.Minute))
	_, err := chain.Request(at(now), req)
	require.NoError(t, err)
	other := request(2, signed("nsc-2", "a", time.Minute), signed("nsmgr", "b", time.Minute), signed("fwd", "c", time.Minute))
	_, err = chain.Request(at(now), other)
	require.NoError(t, err)
	_, err = chain.Close(at(now.Add(time.Hour)), other.GetConnection())
	require.NoError(t, err)
	require.Len(t, rec.Closes(), 1)
}

// FuzzIdentityDecidesAsItsRego checks that with an identity the default policies decide every
// Request at the forwarder as their Rego does when OPA evaluates it alone. Each byte picks the
// client's token, the manager's token, the caller and whether the connection is known (owned by
// nsc) from the variants below.
func FuzzIdentityDecidesAsItsRego(f *testing.F) {
	for _, seed := range [][]byte{{0, 0, 0, 0}, {0, 0, 0, 1}, {6, 0, 0, 1}, {1, 2, 1, 0}, {3, 4, 2, 1}, {2, 5, 0, 0}, {4, 6, 0, 1}, {5, 3, 1, 1}} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	m := newMesh(f, "nsc", "nsc-2", "nsmgr", "nsmgr-2", "fwd", "fwd-2")
	variants := func(from, to, other string) []string {
		return []string{
			m.token(from, to, now),                 // good
			m.token(from, other, now),              // addressed elsewhere
			m.forged(from, to),                     // another key
			m.token(from, to, now.Add(-time.Hour)), // expired
			insecure(from),                         // proves nothing
			"",                                     // none
			m.token("nsc-2", to, now),              // another client's
		}
	}
	nscTokens, nsmgrTokens := variants("nsc", "nsmgr", "nsmgr-2"), variants("nsmgr", "fwd", "fwd-2")
	callers := []string{"nsmgr", "nsc", ""}
	servers := secureServers(m)
	fast, rego := servers["defaults"], servers["named"]
	owned := atFwd(nscTokens[0], nsmgrTokens[0])
	for _, s := range servers {
		_, err := s.Request(m.from(now, "nsmgr"), owned)
		require.NoError(f, err)
	}
	n := 0
	f.Fuzz(func(t *testing.T, nscTok, nsmgrTok, caller, known uint8) {
		req := atFwd(nscTokens[int(nscTok)%len(nscTokens)], nsmgrTokens[int(nsmgrTok)%len(nsmgrTokens)])
		if known%2 == 0 { // a connection of its own, never seen before
			n++
			req.GetConnection().GetPath().GetPathSegments()[2].Id = fmt.Sprint("new-", n)
		}
		ctx := m.from(now, callers[int(caller)%len(callers)])
		_, fastErr := fast.Request(ctx, req)
		_, regoErr := rego.Request(ctx, req.Clone())
		require.Equal(t, status.Convert(regoErr).Message(), status.Convert(fastErr).Message())
		require.Equal(t, status.Code(regoErr), status.Code(fastErr))
	})
}

// BenchmarkSecureRequest authorizes a Request with an identity at the forwarder of a remote path
// (three hops before it, one after), the caller over mutual TLS: the same tokens again (what a
// hop sees from one peer within a second: verdicts and claims cached), new tokens each time
// (more than the caches hold: every signature verified, every token decoded), and OPA deciding
// (the defaults named).
func BenchmarkSecureRequest(b *testing.B) {
	m := newMesh(b, "nsc", "nsmgr-a", "nsmgr-b", "fwd")
	path := func(i int) *networkservice.NetworkServiceRequest {
		at := now.Add(time.Duration(i) * time.Second) // a new second, a new token
		return request(3, seg("nsc", "a", tokenOf(m.hops["nsc"], "nsmgr-a", at)), seg("nsmgr-a", "b", tokenOf(m.hops["nsmgr-a"], "nsmgr-b", at)),
			seg("nsmgr-b", "c", tokenOf(m.hops["nsmgr-b"], "fwd", at)), seg("fwd", "d", ""), seg("nse", "e", ""))
	}
	for _, bc := range []struct {
		name  string
		paths int
		opts  []authorize.Option
	}{
		{name: "same tokens", paths: 1},
		{name: "new tokens", paths: 2048},
		{name: "same tokens, OPA", paths: 1, opts: []authorize.Option{authorize.WithPolicyFS(authorize.Defaults, "*.rego")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := authorize.NewServer(append(bc.opts, authorize.WithIdentity(m.hops["fwd"]))...)
			reqs := make([]*networkservice.NetworkServiceRequest, bc.paths)
			for i := range reqs {
				reqs[i] = path(i)
			}
			ctx := m.from(now, "nsmgr-b")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.Request(ctx, reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
