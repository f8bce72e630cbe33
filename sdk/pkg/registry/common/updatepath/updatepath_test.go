package updatepath_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPathIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"first hop", nil, []string{"nsmgr"}},
		{"next hop", []string{"nse"}, []string{"nse", "nsmgr"}},
		{"the same path again (refresh)", []string{"nse", "nsmgr"}, []string{"nse", "nsmgr"}},
		{"a record that went further before", []string{"nse", "nsmgr", "registry"}, []string{"nse", "nsmgr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			seen := checks.NewNSE()
			nseChain := next.Chain(updatepath.NewNSE("nsmgr"), next.NSE(seen))
			in := &registry.NetworkServiceEndpoint{Name: "nse-1", Url: "tcp://[::1]:5000", PathIds: tc.in}
			_, err := nseChain.Register(ctx, in)
			require.NoError(t, err)
			require.Equal(t, tc.want, seen.Registers()[0].Record.GetPathIds())
			require.Equal(t, tc.in, in.GetPathIds(), "the caller's record is left as it was")

			require.NoError(t, nseChain.Unregister(ctx, in))
			require.Equal(t, tc.want, seen.Unregisters()[0].Record.GetPathIds(), "Unregister too")

			seenNS := checks.NewNS()
			nsChain := next.Chain(updatepath.NewNS("nsmgr"), next.NS(seenNS))
			_, err = nsChain.Register(ctx, &registry.NetworkService{Name: "icmp", PathIds: tc.in})
			require.NoError(t, err)
			require.Equal(t, tc.want, seenNS.Registers()[0].Record.GetPathIds())
		})
	}
}

func TestThroughHopsToStore(t *testing.T) {
	ctx := context.Background()
	store := memory.NewNSE()
	nseClient := next.Chain(updatepath.NewNSE("nse-1"), updatepath.NewNSE("nsmgr-a"), updatepath.NewNSE("registry"), store)
	got, err := nseClient.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1", Url: "tcp://127.0.0.1:5000"})
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1", "nsmgr-a", "registry"}, got.GetPathIds())

	// A refresh of the record as returned takes the same path and keeps the same ids.
	got, err = nseClient.Register(ctx, got)
	require.NoError(t, err)
	require.Equal(t, []string{"nse-1", "nsmgr-a", "registry"}, got.GetPathIds())

	_, err = nseClient.Register(ctx, nil)
	require.Error(t, err, "no record: the store refuses it, nothing panics")
}

func TestPathFromMetadata(t *testing.T) {
	wire := func(p *updatepath.Path) string {
		b, err := json.Marshal(p)
		require.NoError(t, err)
		return string(b)
	}
	seg := func(tok string) *updatepath.Segment { return &updatepath.Segment{Token: tok} }
	const expires = "2026-12-07T17:00:00Z"
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want []string // the tokens of the path the next element sees
		code codes.Code
		says string
	}{
		{"the registrant itself", metadata.Pairs(token.TokenKey, "t-nse", token.ExpiresKey, expires), []string{"t-nse"}, codes.OK, ""},
		{"through an nsmgr", metadata.Pairs(token.TokenKey, "t-nsmgr", token.ExpiresKey, expires, updatepath.MetadataKey, wire(&updatepath.Path{Index: 1, Segments: []*updatepath.Segment{seg("t-nse")}})),
			[]string{"t-nse", "t-nsmgr"}, codes.OK, ""},
		{"NSM's sender names its own segment", metadata.Pairs(token.TokenKey, "t-nsmgr", token.ExpiresKey, expires, updatepath.MetadataKey, wire(&updatepath.Path{Index: 1, Segments: []*updatepath.Segment{seg("t-nse"), seg("written by the sender")}})),
			[]string{"t-nse", "t-nsmgr"}, codes.OK, ""},
		{"no token", metadata.MD{}, []string{""}, codes.OK, ""},
		{"not JSON", metadata.Pairs(updatepath.MetadataKey, "{"), nil, codes.InvalidArgument, `updatepath: metadata "path" is not a path`},
		{"index beyond", metadata.Pairs(updatepath.MetadataKey, wire(&updatepath.Path{Index: 2})), nil, codes.InvalidArgument, "names segment 2 as its sender's but has 0"},
		{"null segment", metadata.Pairs(updatepath.MetadataKey, `{"Index":1,"PathSegments":[null]}`), nil, codes.InvalidArgument, "segment 0 of the path"},
		{"twice", metadata.Pairs(updatepath.MetadataKey, "{}", updatepath.MetadataKey, "{}"), nil, codes.InvalidArgument, "came 2 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			look := &peek{}
			chain := next.Chain(updatepath.NewNSE("registry"), next.NSE(look))
			ctx := metadata.NewIncomingContext(context.Background(), tc.md)
			ctx = metadata.AppendToOutgoingContext(ctx, "from-the-caller", "x")
			_, err := chain.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1"})
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			seen, sent := look.path, look.sent
			if err != nil {
				require.ErrorContains(t, err, tc.says)
				require.Nil(t, seen, "refused before next")
				return
			}
			var toks []string
			for _, s := range seen.Segments {
				toks = append(toks, s.Token)
			}
			require.Equal(t, tc.want, toks)
			require.Equal(t, []string{wire(&updatepath.Path{Index: uint32(len(toks)), Segments: seen.Segments})}, sent.Get(updatepath.MetadataKey),
				"passed on in the outgoing metadata")
			require.Empty(t, sent.Get("from-the-caller"), "only the path goes on")
		})
	}
}

// peek records the path and outgoing metadata of the Register that reaches it.
type peek struct {
	path *updatepath.Path
	sent metadata.MD
}

func (p *peek) Register(ctx context.Context, r *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, error) {
	p.path = updatepath.FromContext(ctx)
	p.sent, _ = metadata.FromOutgoingContext(ctx)
	return r, nil
}

func (p *peek) Find(context.Context, *next.Query[*registry.NetworkServiceEndpoint], func(*next.Event[*registry.NetworkServiceEndpoint]) error) error {
	return nil
}

func (p *peek) Unregister(context.Context, *registry.NetworkServiceEndpoint) error { return nil }

// FuzzPathMetadata: whatever a caller sends as the path, updatepath refuses it with
// InvalidArgument or passes on a path that ends with the caller's own token and keeps at most the
// segments it may.
func FuzzPathMetadata(f *testing.F) {
	f.Add(`{"Index":1,"PathSegments":[{"token":"a"}]}`)
	f.Add(`{"Index":1,"PathSegments":[{"token":"a"},{"token":"b"}]}`)
	f.Add(`{"Index":0,"PathSegments":[]}`)
	f.Add(`{"Index":4294967295}`)
	f.Add(`{"PathSegments":[null]}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, sent string) {
		look := &peek{}
		chain := next.Chain(updatepath.NewNSE("registry"), next.NSE(look))
		ctx := metadata.NewIncomingContext(context.Background(),
			metadata.Pairs(updatepath.MetadataKey, sent, token.TokenKey, "own", token.ExpiresKey, "2026-12-07T17:00:00Z"))
		_, err := chain.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1"})
		if err != nil {
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			return
		}
		segs := look.path.Segments
		require.NotEmpty(t, segs)
		require.LessOrEqual(t, len(segs), 17)
		require.Equal(t, "own", segs[len(segs)-1].Token)
	})
}
