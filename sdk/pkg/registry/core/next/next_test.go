package next_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mark appends its letter to the URL of every record on the way in.
type mark[R next.Record] struct {
	letter string
	url    func(R) *string
}

func (m mark[R]) Register(ctx context.Context, r R) (R, error) {
	*m.url(r) += m.letter
	return next.Of[R](ctx).Register(ctx, r)
}

func (m mark[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	*m.url(q.Record) += m.letter
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (m mark[R]) Unregister(ctx context.Context, r R) error {
	*m.url(r) += m.letter
	return next.Of[R](ctx).Unregister(ctx, r)
}

func nseURL(n *registry.NetworkServiceEndpoint) *string { return &n.Url }

func nsPayload(n *registry.NetworkService) *string { return &n.Payload }

func TestChainsKeepOrderAndNest(t *testing.T) {
	m := func(l string) next.NSE { return mark[*registry.NetworkServiceEndpoint]{l, nseURL} }
	c := next.Chain(m("a"), next.Chain(m("b"), m("c")), m("d"))
	ctx := context.Background()

	nse, err := c.Register(ctx, &registry.NetworkServiceEndpoint{Name: "e"})
	require.NoError(t, err)
	require.Equal(t, "abcd", nse.GetUrl())

	q := &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}}
	require.NoError(t, c.Find(ctx, q, func(*next.Event[*registry.NetworkServiceEndpoint]) error {
		t.Fatal("the tail finds nothing")
		return nil
	}))
	require.Equal(t, "abcd", q.Record.GetUrl())

	require.NoError(t, c.Unregister(ctx, nse))
	require.Equal(t, "abcdabcd", nse.GetUrl())
}

func TestNSAndNSEChainsDoNotMix(t *testing.T) {
	var ns next.NS = mark[*registry.NetworkService]{"x", nsPayload}
	nse := next.Chain[*registry.NetworkServiceEndpoint](mark[*registry.NetworkServiceEndpoint]{"y", nseURL})
	// An NS chain whose element calls an NSE chain must not continue into the NS chain's rest.
	outer := next.Chain(ns, next.Chain(ns))
	got, err := outer.Register(context.Background(), &registry.NetworkService{Name: "s"})
	require.NoError(t, err)
	require.Equal(t, "xx", got.GetPayload())
	e, err := nse.Register(context.Background(), &registry.NetworkServiceEndpoint{Name: "e"})
	require.NoError(t, err)
	require.Equal(t, "y", e.GetUrl())
}
