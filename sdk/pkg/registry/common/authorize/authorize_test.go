package authorize_test

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/authorize"
	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/expire"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

// step is one call: by identity (set with WithIdentity unless empty) and with path_ids.
type step struct {
	op   string // "register", "unregister", or "fail" (a Register the store refuses)
	id   string
	path []string
	want codes.Code
	says string // part of the error message
}

func TestOnlyTheRegistrant(t *testing.T) {
	const alice, bob = "spiffe://vw/ns/default/sa/alice", "spiffe://vw/ns/default/sa/bob"
	for _, tc := range []struct {
		name  string
		opts  []authorize.Option
		steps []step
	}{
		{"owner may update and unregister", nil, []step{
			{op: "register", id: alice}, {op: "register", id: alice}, {op: "unregister", id: alice}}},
		{"another identity may not", nil, []step{
			{op: "register", id: alice},
			{op: "register", id: bob, want: codes.PermissionDenied, says: `"nse-1" is registered by "` + alice + `"; "` + bob + `" may not`},
			{op: "unregister", id: bob, want: codes.PermissionDenied, says: "may not change or unregister it"},
			{op: "unregister", id: alice}}},
		{"forgotten when unregistered", nil, []step{
			{op: "register", id: alice}, {op: "unregister", id: alice}, {op: "register", id: bob}}},
		{"identity from the first path id", nil, []step{
			{op: "register", path: []string{"nse-a", "nsmgr"}},
			{op: "register", path: []string{"nse-b", "nsmgr"}, want: codes.PermissionDenied, says: `registered by "nse-a"`},
			{op: "register", path: []string{"nse-a", "nsmgr-2"}}}},
		{"context identity before path ids", nil, []step{
			{op: "register", id: alice, path: []string{"nse-a"}},
			{op: "register", path: []string{alice}},
			{op: "register", id: bob, path: []string{alice}, want: codes.PermissionDenied}}},
		{"anonymous owner", nil, []step{
			{op: "register"},
			{op: "unregister", id: bob, want: codes.PermissionDenied, says: "registered by an anonymous caller"},
			{op: "unregister"}}},
		{"a refused first Register claims nothing", nil, []step{
			{op: "fail", id: alice, want: codes.Unavailable}, {op: "register", id: bob}}},
		{"a refused update keeps the owner", nil, []step{
			{op: "register", id: alice}, {op: "fail", id: alice, want: codes.Unavailable},
			{op: "register", id: bob, want: codes.PermissionDenied}}},
		{"unknown name may be unregistered", nil, []step{{op: "unregister", id: bob}}},
		{"Any allows all", []authorize.Option{authorize.Any()}, []step{
			{op: "register", id: alice}, {op: "register", id: bob}, {op: "unregister", id: alice}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fail := inject.NewNSE(nil) // the store refuses while set
			chain := next.Chain(authorize.NewNSE(tc.opts...), next.NSE(fail), memory.NewNSE())
			for i, s := range tc.steps {
				ctx := context.Background()
				if s.id != "" {
					ctx = authorize.WithIdentity(ctx, s.id)
				}
				in := &nse{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: s.path}
				var err error
				switch s.op {
				case "register":
					_, err = chain.Register(ctx, in)
				case "fail":
					fail.FailRegisters(status.Error(codes.Unavailable, "store down"))
					_, err = chain.Register(ctx, in)
					fail.FailRegisters(nil)
				case "unregister":
					err = chain.Unregister(ctx, in)
				}
				require.Equal(t, s.want, status.Code(err), "step %d: %v", i, err)
				if s.says != "" {
					require.Contains(t, err.Error(), s.says)
				}
			}
		})
	}
}

func TestNetworkServices(t *testing.T) {
	chain := next.Chain(authorize.NewNS(), memory.NewNS())
	alice := authorize.WithIdentity(context.Background(), "alice")
	_, err := chain.Register(alice, &registry.NetworkService{Name: "icmp", Payload: "IP"})
	require.NoError(t, err)
	_, err = chain.Register(authorize.WithIdentity(context.Background(), "bob"), &registry.NetworkService{Name: "icmp", Payload: "ETHERNET"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.NoError(t, chain.Unregister(alice, &registry.NetworkService{Name: "icmp"}))
}

func TestExpiryForgetsOwner(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	store := memory.NewNSE()
	chain := next.Chain(begin.NewNSE(), authorize.NewNSE(), expire.NewNSE(), store)

	_, err := chain.Register(authorize.WithIdentity(ctx, "alice"), &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})
	require.NoError(t, err)
	bob := authorize.WithIdentity(ctx, "bob")
	_, err = chain.Register(bob, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5001"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	events := make(chan *next.Event[*nse], 2)
	watchCtx, cancel := context.WithCancel(ctx)
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
	fake.Advance(time.Minute)
	require.True(t, (<-events).Deleted)

	_, err = chain.Register(bob, &nse{Name: "nse-1", Url: "tcp://127.0.0.1:5001"})
	require.NoError(t, err, "the expired registration's owner is forgotten")
}
