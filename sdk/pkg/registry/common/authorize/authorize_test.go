package authorize_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

var (
	td  = spiffeid.RequireTrustDomainFromString("vwire.test")
	now = time.Now().Truncate(time.Second) // SVIDs are checked against the real time
)

func id(name string) string { return spiffeid.RequireFromPath(td, "/"+name).String() }

// trust is a trust domain whose SVIDs the tests' callers hold.
type trust struct {
	t       testing.TB
	ca      *spiffe.CA
	sources map[string]spiffe.Source // one SVID each
}

func newTrust(t testing.TB) *trust {
	ca, err := spiffe.NewCA(td)
	require.NoError(t, err)
	return &trust{t: t, ca: ca, sources: map[string]spiffe.Source{}}
}

func (tr *trust) source(name string) spiffe.Source {
	if src, ok := tr.sources[name]; ok {
		return src
	}
	src, err := tr.ca.Source(spiffeid.RequireFromPath(td, "/"+name), time.Hour)
	require.NoError(tr.t, err)
	tr.sources[name] = src
	return src
}

// tok is name's token to aud, issued at issued, lasting a minute.
func (tr *trust) tok(name, aud string, issued time.Time) string {
	gen, err := spiffe.Tokens(tr.source(name), time.Minute, token.WithAudience(aud), token.WithClock(clock.NewFake(issued)))
	require.NoError(tr.t, err)
	tok, _, err := gen(nil)
	require.NoError(tr.t, err)
	return tok
}

// nsmTok is name's token to aud as NSM's components make them: signed by the SVID's key, without
// its chain.
func (tr *trust) nsmTok(name, aud string) string {
	svid, err := tr.source(name).GetX509SVID()
	require.NoError(tr.t, err)
	tok, _, err := token.NewJWT(svid.PrivateKey, id(name), time.Minute, token.WithAudience(aud), token.WithClock(clock.NewFake(now)))(nil)
	require.NoError(tr.t, err)
	return tok
}

// call returns the context of a call at now by the mTLS peer named peerName (none if empty),
// whose path is toks.
func (tr *trust) call(peerName string, toks ...string) context.Context {
	ctx := clock.WithClock(context.Background(), clock.NewFake(now))
	if peerName != "" {
		svid, err := tr.source(peerName).GetX509SVID()
		require.NoError(tr.t, err)
		info := credentials.TLSInfo{}
		info.State.PeerCertificates = svid.Certificates
		ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: info})
	}
	path := &updatepath.Path{Index: uint32(len(toks))}
	for _, tok := range toks {
		path.Segments = append(path.Segments, &updatepath.Segment{Token: tok})
	}
	return updatepath.WithPath(ctx, path)
}

// TestPolicies runs each call through the default policies twice, with the Go fast path and with
// OPA only, which must agree.
func TestPolicies(t *testing.T) {
	tr := newTrust(t)
	alice := tr.tok("alice", id("registry"), now)
	aliceToNsmgr := tr.tok("alice", id("nsmgr"), now)
	nsmgr := tr.tok("nsmgr", id("registry"), now)
	stale := tr.tok("alice", id("registry"), now.Add(-2*time.Minute))
	nsmStyle := tr.nsmTok("alice", id("registry")) // no x5c: only the peer's certificate verifies it
	insecure, _, err := token.NewInsecure(time.Minute, token.WithName(id("alice")), token.WithClock(clock.NewFake(now)))(nil)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		ctx  context.Context
		says string // "" allowed
	}{
		{"the registrant itself", tr.call("alice", alice), ""},
		{"through its nsmgr", tr.call("nsmgr", aliceToNsmgr, nsmgr), ""},
		{"NSM's token, without x5c, from its signer", tr.call("alice", nsmStyle), ""},
		{"NSM's token from another", tr.call("mallory", nsmStyle), "policy signed: segment 0: the token cannot be trusted: token: token is unverifiable: error while executing keyfunc: it has no x5c header with its signer's certificates; nor by the caller's mTLS certificate: token signature is invalid"},
		{"NSM's token passed on", tr.call("nsmgr", tr.nsmTok("alice", id("nsmgr")), nsmgr), "policy signed: segment 0: the token cannot be trusted"},
		{"no TLS", tr.call("", alice), "policy signed: the caller presented no SVID: the registry API needs mutual TLS"},
		{"no path", tr.call("alice"), "policy path: the call carries no path of callers"},
		{"no token", tr.call("alice", ""), "policy tokens: segment 0: no token"},
		{"not a JWT", tr.call("alice", "a.b"), "policy tokens: segment 0: the token is not a JWT"},
		{"expired", tr.call("alice", stale), "policy tokens: segment 0: the token of " + id("alice") + " expired at"},
		{"unsigned", tr.call("alice", insecure), "policy signed: segment 0: the token cannot be trusted: token: "},
		{"another's token", tr.call("mallory", alice), "the caller's token is signed by " + id("alice") + ", but the caller presented the SVID of " + id("mallory")},
		{"a token addressed to another hop", tr.call("alice", aliceToNsmgr), "policy path: the caller's token is addressed to [\"" + id("nsmgr") + "\"], not to this registry, " + id("registry")},
		{"a token sent elsewhere", tr.call("nsmgr", alice, nsmgr), "policy path: segment 0: the token of " + id("alice") + ` is addressed to ["` + id("registry") + `"], not to ` + id("nsmgr") + " who passed it on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, opts := range [][]authorize.Option{
				{authorize.WithIdentity(tr.source("registry"))},
				{authorize.WithIdentity(tr.source("registry")), authorize.WithPolicyFS(authorize.Defaults, "*.rego")},
			} {
				chain := next.Chain(authorize.NewNSE(opts...), memory.NewNSE())
				_, err := chain.Register(tc.ctx, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
				if tc.says == "" {
					require.NoError(t, err)
					continue
				}
				require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
				require.ErrorContains(t, err, "authorize: register nse-1: policy ")
				require.ErrorContains(t, err, tc.says)
				require.Equal(t, codes.PermissionDenied, status.Code(chain.Unregister(tc.ctx, &nse{Name: "nse-1"})))
			}
		})
	}
}

func TestOnlyTheRegistrant(t *testing.T) {
	tr := newTrust(t)
	alice := tr.call("alice", tr.tok("alice", id("registry"), now))
	bob := tr.call("bob", tr.tok("bob", id("registry"), now))
	aliceViaNsmgr := tr.call("nsmgr", tr.tok("alice", id("nsmgr"), now), tr.tok("nsmgr", id("registry"), now))
	fail := inject.NewNSE(nil)
	chain := next.Chain(authorize.NewNSE(authorize.WithIdentity(tr.source("registry"))), next.NSE(fail), memory.NewNSE())
	rec := &nse{Name: "nse-1", Url: "tcp://[::1]:5000"}

	fail.FailRegisters(status.Error(codes.Unavailable, "store down"))
	_, err := chain.Register(bob, rec)
	require.Equal(t, codes.Unavailable, status.Code(err))
	fail.FailRegisters(nil)

	_, err = chain.Register(alice, rec)
	require.NoError(t, err, "a refused first Register claimed nothing")
	_, err = chain.Register(bob, rec)
	require.ErrorContains(t, err, `authorize: register nse-1: policy owner: endpoint "nse-1" is registered by `+id("alice")+"; "+id("bob")+" may not change it")
	require.Equal(t, codes.PermissionDenied, status.Code(chain.Unregister(bob, rec)))
	_, err = chain.Register(aliceViaNsmgr, rec)
	require.NoError(t, err, "the registrant through its nsmgr")
	require.NoError(t, chain.Unregister(alice, rec))
	_, err = chain.Register(bob, rec)
	require.NoError(t, err, "unregistered, the name is free")

}

// TestOwnersOutliveARestart: a registry that restarts with its store (Kubernetes) learns the
// owner of a stored name from the record's path_ids, verified when it was stored.
func TestOwnersOutliveARestart(t *testing.T) {
	tr := newTrust(t)
	by := func(name string) context.Context { return tr.call(name, tr.tok(name, id("registry"), now)) }
	store := memory.NewNSE()
	restarted := func() next.NSE {
		return next.Chain(authorize.NewNSE(authorize.WithIdentity(tr.source("registry"))), store)
	}
	got, err := restarted().Register(by("alice"), &nse{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: []string{"alice", "claims"}})
	require.NoError(t, err)
	require.Equal(t, []string{id("alice"), id("registry")}, got.GetPathIds(), "stored with the verified path")

	again := restarted()
	_, err = again.Register(by("bob"), &nse{Name: "nse-1", Url: "tcp://[::1]:6666"})
	require.ErrorContains(t, err, `policy owner: endpoint "nse-1" is registered by `+id("alice")+"; "+id("bob")+" may not change it")
	_, err = again.Register(by("alice"), &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)

	// Without identities, by the claim stored.
	claims := memory.NewNSE()
	_, err = next.Chain(authorize.NewNSE(), claims).Register(context.Background(), &nse{Name: "nse-2", Url: "tcp://[::1]:5000", PathIds: []string{"alice", "registry"}})
	require.NoError(t, err)
	_, err = next.Chain(authorize.NewNSE(), claims).Register(context.Background(), &nse{Name: "nse-2", Url: "tcp://[::1]:6666", PathIds: []string{"bob", "registry"}})
	require.ErrorContains(t, err, `"nse-2" is registered by "alice"; "bob" may not`)
}

func TestSharedServices(t *testing.T) {
	tr := newTrust(t)
	by := func(name string) context.Context { return tr.call(name, tr.tok(name, id("registry"), now)) }
	ns := next.Chain(authorize.NewNS(authorize.WithIdentity(tr.source("registry"))), memory.NewNS())
	icmp := &registry.NetworkService{Name: "icmp"}
	for _, who := range []string{"alice", "bob", "alice"} {
		_, err := ns.Register(by(who), icmp)
		require.NoError(t, err, "any endpoint registers the service it offers")
	}
	err := ns.Unregister(by("mallory"), icmp)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, `policy owner: service "icmp" is registered by `+id("alice")+", "+id("bob")+"; "+id("mallory")+" may not unregister it")
	require.NoError(t, ns.Unregister(by("bob"), icmp), "an owner may")
	require.NoError(t, ns.Unregister(by("mallory"), icmp), "unregistered, nobody holds it")
}

// TestExpiryPasses: the registry's own expiry of a registration whose token expired long ago
// passes, and forgets the owner.
func TestExpiryPasses(t *testing.T) {
	tr := newTrust(t)
	fake := clock.NewFake(now)
	at := func(ctx context.Context) context.Context { return clock.WithClock(ctx, fake) }
	alice := at(tr.call("alice", tr.tok("alice", id("registry"), now)))
	store := memory.NewNSE()
	chain := next.Chain(begin.NewNSE(), authorize.NewNSE(authorize.WithIdentity(tr.source("registry"))), expire.NewNSE(expire.WithDefaultLifetime(10*time.Minute)), store)
	_, err := chain.Register(alice, &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
	require.NoError(t, err)

	events := make(chan *next.Event[*nse], 2)
	watchCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = store.Find(watchCtx, &next.Query[*nse]{Record: &nse{}, Watch: true}, func(ev *next.Event[*nse]) error {
			events <- ev
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	require.False(t, (<-events).Deleted, "the watch is on")
	fake.Advance(10 * time.Minute) // the token expired 9 minutes before
	require.True(t, (<-events).Deleted)

	bob := at(tr.call("bob", tr.tok("bob", id("registry"), now.Add(10*time.Minute))))
	_, err = chain.Register(bob, &nse{Name: "nse-1", Url: "tcp://[::1]:5001"})
	require.NoError(t, err, "the expired registration's owner is forgotten")
}

func TestInsecure(t *testing.T) {
	tok := func(name string) string {
		tok, _, err := token.NewInsecure(time.Minute, token.WithName(name))(nil)
		require.NoError(t, err)
		return tok
	}
	byToken := func(name string) context.Context {
		return updatepath.WithPath(context.Background(), &updatepath.Path{Index: 1, Segments: []*updatepath.Segment{{Token: tok(name)}}})
	}
	chain := next.Chain(authorize.NewNSE(), memory.NewNSE())
	_, err := chain.Register(byToken("whoever"), &nse{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: []string{"alice", "registry"}})
	require.NoError(t, err, "the path_ids the caller sent name the registrant")
	_, err = chain.Register(byToken("bob"), &nse{Name: "nse-1", Url: "tcp://[::1]:5000"})
	require.ErrorContains(t, err, `authorize: "nse-1" is registered by "alice"; "bob" may not change or unregister it`, "else its token")
	require.ErrorContains(t, chain.Unregister(context.Background(), &nse{Name: "nse-1", PathIds: []string{"registry"}}),
		"an anonymous caller may not", "the registry's own id alone names nobody")
	require.NoError(t, chain.Unregister(byToken("alice"), &nse{Name: "nse-1"}))

	_, err = next.Chain(authorize.NewNSE(authorize.Any()), memory.NewNSE()).Register(context.Background(), &nse{Name: "nse-1"})
	require.NoError(t, err, "Any lets all through")
}

const onlyAlice = `package vwire.registry.alice

deny contains sprintf("%s is not alice", [input.registrant]) if input.registrant != "` + "spiffe://vwire.test/alice" + `"
`

func TestOwnPolicies(t *testing.T) {
	tr := newTrust(t)
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "alice.rego"), []byte(onlyAlice), 0o600))

	chain := next.Chain(authorize.NewNSE(authorize.WithIdentity(tr.source("registry")), authorize.WithPolicies(filepath.Join(dir, "*.rego"))), memory.NewNSE())
	_, err = chain.Register(tr.call("", tr.tok("alice", id("registry"), now)), &nse{Name: "nse-1"})
	require.NoError(t, err, "own policies replace the defaults: no TLS needed")
	_, err = chain.Register(tr.call("bob", tr.tok("bob", id("registry"), now)), &nse{Name: "nse-2"})
	require.Equal(t, "authorize: register nse-2: policy alice: "+id("bob")+" is not alice", status.Convert(err).Message())
}

func TestBadConfiguration(t *testing.T) {
	bundle := authorize.WithIdentity(newTrust(t).source("registry"))
	for _, tc := range []struct {
		name string
		opts []authorize.Option
		want string
	}{
		{"syntax", []authorize.Option{bundle, policy("package vwire.registry.x\ndeny contains")}, "authorize: policy bad.rego: 2 errors occurred:\nbad.rego:2: rego_parse_error"},
		{"outside the namespace", []authorize.Option{bundle, policy("package vwire.authorize.x\ndeny contains 1 if true")}, "package data.vwire.authorize.x is not vwire.registry.<policy name>"},
		{"no deny", []authorize.Option{bundle, policy("package vwire.registry.x\nallow if true")}, "authorize: policy bad.rego: no set rule deny"},
		{"does not compile", []authorize.Option{bundle, policy("package vwire.registry.x\ndeny contains y if true")}, "authorize: compile policies:"},
		{"no files", []authorize.Option{bundle, authorize.WithPolicies("/nonexistent/vw/*.rego")}, `authorize: policy files "/nonexistent/vw/*.rego": none found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := authorize.Check(tc.opts...)
			require.ErrorContains(t, err, tc.want)
			require.Panics(t, func() { authorize.NewNSE(tc.opts...) })
		})
	}
}

func policy(src string) authorize.Option {
	return authorize.WithPolicyFS(fstest.MapFS{"bad.rego": {Data: []byte(src)}}, "*.rego")
}

// FuzzPath: any path of any tokens gets an answer, allowed or PermissionDenied, and the same
// from the Go fast path and from OPA.
func FuzzPath(f *testing.F) {
	tr := newTrust(f)
	good := tr.tok("alice", id("registry"), now)
	f.Add(good, "")
	f.Add(tr.tok("alice", id("nsmgr"), now), tr.tok("nsmgr", id("registry"), now))
	f.Add("e30.e30.", good)
	f.Add(tr.nsmTok("alice", id("registry")), "")
	self := tr.source("registry")
	fast := authorize.NewNSE(authorize.WithIdentity(self))
	opa := authorize.NewNSE(authorize.WithIdentity(self), authorize.WithPolicyFS(authorize.Defaults, "*.rego"))
	byAlice := tr.call("alice")
	f.Fuzz(func(t *testing.T, first, second string) {
		path := &updatepath.Path{Segments: []*updatepath.Segment{{Token: first}}}
		if second != "" {
			path.Segments = append(path.Segments, &updatepath.Segment{Token: second})
		}
		ctx := updatepath.WithPath(byAlice, path)
		_, fastErr := fast.Register(ctx, &nse{Name: "nse-1"})
		_, opaErr := opa.Register(ctx, &nse{Name: "nse-1"})
		require.Equal(t, status.Convert(opaErr).Message(), status.Convert(fastErr).Message())
		if fastErr != nil {
			require.Equal(t, codes.PermissionDenied, status.Code(fastErr), "%v", fastErr)
		}
	})
}
