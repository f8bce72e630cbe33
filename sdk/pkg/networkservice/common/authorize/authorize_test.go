package authorize_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// now is long before the machine's clock: a policy reading OPA's own clock would deny.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(t time.Time) context.Context { return clock.WithClock(context.Background(), clock.NewFake(t)) }

// signed is a segment of hop name with a token made at now, lasting life.
func signed(name, id string, life time.Duration) *networkservice.PathSegment {
	tok, expires, err := token.NewInsecure(life, token.WithClock(clock.NewFake(now)), token.WithName(name))(nil)
	if err != nil {
		panic(err)
	}
	return &networkservice.PathSegment{Name: name, Id: id, Token: tok, Expires: timestamppb.New(expires)}
}

func withToken(seg *networkservice.PathSegment, tok string) *networkservice.PathSegment {
	seg.Token = tok
	return seg
}

// withExpires sets the segment's expires; the zero time unsets it.
func withExpires(seg *networkservice.PathSegment, t time.Time) *networkservice.PathSegment {
	seg.Expires = nil
	if !t.IsZero() {
		seg.Expires = timestamppb.New(t)
	}
	return seg
}

func request(index uint32, segs ...*networkservice.PathSegment) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{
		Id: segs[min(int(index), len(segs)-1)].GetId(), Path: &networkservice.Path{Index: index, PathSegments: segs},
	}}
}

func jwtWithout(name string) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": name}).SignedString([]byte(token.InsecureKey))
	if err != nil {
		panic(err)
	}
	return tok
}

// policyCase is a Request and what the policies answer.
type policyCase struct {
	name string
	ctx  context.Context
	req  *networkservice.NetworkServiceRequest
	deny string // "" allows; else the whole message after "authorize: "
}

// checkCases runs every case against each server, [server, recorder]: an allowed Request
// passes, a refused one has exactly the message wanted and does not pass.
func checkCases(t *testing.T, servers map[string]networkservice.NetworkServiceServer, tests []policyCase) {
	for name, s := range servers {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				rec := checks.NewServer()
				_, err := next.NewNetworkServiceServer(s, rec).Request(tt.ctx, tt.req)
				if tt.deny == "" {
					require.NoError(t, err)
					require.Len(t, rec.Requests(), 1)
					return
				}
				require.Equal(t, codes.PermissionDenied, status.Code(err))
				require.Equal(t, "authorize: "+tt.deny, status.Convert(err).Message())
				require.Empty(t, rec.Requests(), "a refused request does not pass")
			})
		}
	}
}

func TestDefaultPolicies(t *testing.T) {
	tests := []policyCase{
		{
			name: "valid path",
			ctx:  at(now),
			req:  request(2, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Minute), signed("fwd", "c", time.Minute)),
		},
		{
			name: "this hop and later ones need no token yet",
			ctx:  at(now),
			req:  request(1, signed("nsc", "a", time.Minute), withToken(signed("nsmgr", "b", time.Minute), ""), withToken(signed("nse", "c", time.Minute), "")),
		},
		{
			name: "first hop",
			ctx:  at(now),
			req:  request(0, &networkservice.PathSegment{Name: "nse", Id: "a"}),
		},
		{
			name: "segment without expires relies on the token",
			ctx:  at(now),
			req:  request(1, withExpires(signed("nsc", "a", time.Minute), time.Time{}), signed("nsmgr", "b", time.Minute)),
		},
		{
			name: "expired token",
			ctx:  at(now.Add(2 * time.Minute)),
			req:  request(1, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Hour)),
			deny: "policy tokens: segment 0 (nsc): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:02:00Z)",
		},
		{
			name: "token expires at this very moment",
			ctx:  at(now.Add(time.Minute)),
			req:  request(1, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Hour)),
			deny: "policy tokens: segment 0 (nsc): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:01:00Z)",
		},
		{
			name: "expired segment with a fresh token",
			ctx:  at(now.Add(30 * time.Second)),
			req:  request(1, withExpires(signed("nsc", "a", time.Hour), now.Add(10*time.Second)), signed("nsmgr", "b", time.Hour)),
			deny: "policy tokens: segment 0 (nsc): the segment expired at 2025-06-01T12:00:10Z (now 2025-06-01T12:00:30Z)",
		},
		{
			name: "an earlier hop's token expired",
			ctx:  at(now.Add(2 * time.Minute)),
			req:  request(2, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Hour), signed("fwd", "c", time.Hour)),
			deny: "policy tokens: segment 0 (nsc): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:02:00Z)",
		},
		{
			name: "missing token",
			ctx:  at(now),
			req:  request(1, withToken(signed("nsc", "a", time.Minute), ""), signed("nsmgr", "b", time.Minute)),
			deny: "policy tokens: segment 0 (nsc): no token",
		},
		{
			name: "garbled token",
			ctx:  at(now),
			req:  request(1, withToken(signed("nsc", "a", time.Minute), "eyJhbGciOi.garbage.here"), signed("nsmgr", "b", time.Minute)),
			deny: "policy tokens: segment 0 (nsc): the token is not a JWT",
		},
		{
			name: "not even three parts",
			ctx:  at(now),
			req:  request(1, withToken(signed("nsc", "a", time.Minute), "secret"), signed("nsmgr", "b", time.Minute)),
			deny: "policy tokens: segment 0 (nsc): the token is not a JWT",
		},
		{
			name: "JWT without exp",
			ctx:  at(now),
			req:  request(1, withToken(signed("nsc", "a", time.Minute), jwtWithout("nsc")), signed("nsmgr", "b", time.Minute)),
			deny: "policy tokens: segment 0 (nsc): the token has no exp claim",
		},
		{
			name: "two segments with one ID",
			ctx:  at(now),
			req:  request(2, signed("nsc", "a", time.Minute), signed("nsmgr", "a", time.Minute), signed("fwd", "c", time.Minute)),
			deny: `policy path: segments 0 (nsc) and 1 (nsmgr) share the ID "a"`,
		},
		{
			name: "segment without a name",
			ctx:  at(now),
			req:  request(1, signed("", "a", time.Minute), signed("nsmgr", "b", time.Minute)),
			deny: "policy path: segment 0 has no name",
		},
		{
			name: "segment without an ID",
			ctx:  at(now),
			req:  request(1, signed("nsc", "", time.Minute), signed("nsmgr", "b", time.Minute)),
			deny: "policy path: segment 0 (nsc) has no ID",
		},
		{
			name: "index outside the path",
			ctx:  at(now),
			req:  request(2, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Minute)),
			deny: "policy path: path index 2 is outside the path of 2 segments",
		},
		{
			name: "every reason, sorted",
			ctx:  at(now.Add(2 * time.Minute)),
			req:  request(2, withToken(signed("nsc", "a", time.Minute), ""), signed("nsmgr", "a", time.Minute), signed("fwd", "c", time.Minute)),
			deny: `policy path: segments 0 (nsc) and 1 (nsmgr) share the ID "a"; ` +
				"policy tokens: segment 0 (nsc): no token; " +
				"policy tokens: segment 1 (nsmgr): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T12:02:00Z)",
		},
	}
	// The defaults, and the same policies named as a policy set of one's own: OPA alone decides
	// those, with no shortcut for the paths the defaults clearly allow.
	checkCases(t, map[string]networkservice.NetworkServiceServer{
		"defaults": authorize.NewServer(),
		"named":    authorize.NewServer(authorize.WithPolicyFS(authorize.Defaults, "*.rego")),
	}, tests)
}

// FuzzDefaultsDecideAsTheirRego checks that the default policies decide every path as their
// Rego does when OPA evaluates it alone: the shortcut for the paths they clearly allow never
// lets through a path the Rego refuses. Each byte of spec makes a segment: its name, its ID
// (from a few, so that some repeat), its token (valid, expired, expiring now, not a JWT, no or a
// strange exp) and its expires.
func FuzzDefaultsDecideAsTheirRego(f *testing.F) {
	f.Add(uint8(2), []byte{0, 1, 2})
	f.Add(uint8(1), []byte{0x00, 0x11})
	f.Add(uint8(3), []byte{0x10, 0x21, 0x32, 0x43})
	f.Add(uint8(2), []byte{0x50, 0x61, 0x02})
	f.Add(uint8(2), []byte{0x70, 0x81, 0x92})
	f.Add(uint8(3), []byte{0xa0, 0xb1, 0xc2, 0xd3})
	f.Add(uint8(1), []byte{0xe0, 0xf1})
	f.Add(uint8(0), []byte{0x04})
	f.Add(uint8(5), []byte{0x00, 0x01})
	f.Add(uint8(2), []byte{0x08, 0x49, 0x8a})
	fast := authorize.NewServer()
	rego := authorize.NewServer(authorize.WithPolicyFS(authorize.Defaults, "*.rego"))
	ctx := at(now)
	f.Fuzz(func(t *testing.T, index uint8, spec []byte) {
		if len(spec) == 0 || len(spec) > 8 {
			return
		}
		req := request(uint32(index%8), fuzzSegments(spec)...)
		_, fastErr := fast.Request(ctx, req)
		_, regoErr := rego.Request(ctx, req)
		require.Equal(t, status.Convert(regoErr).Message(), status.Convert(fastErr).Message(), "%v", req)
		require.Equal(t, status.Code(regoErr), status.Code(fastErr))
	})
}

// fuzzSegments makes a segment of each byte: bits 0-1 pick the ID, bit 2 empties the name,
// bits 3-5 the token, bits 6-7 the expires.
func fuzzSegments(spec []byte) []*networkservice.PathSegment {
	tokens := []func(name string) string{
		func(name string) string { return signed(name, "", time.Minute).GetToken() },
		func(name string) string { return expiredToken(name) },
		func(string) string { return "" },
		func(string) string { return "e30.e30." },
		func(name string) string { return jwtWithout(name) },
		func(name string) string { return jwtWith(name, json.Number("1.7487792e9")) },
		func(name string) string { return jwtWith(name, json.Number(fmt.Sprint(now.Unix()))) },
		func(name string) string { return jwtWith(name, json.Number("99999999999999999999")) },
	}
	expires := []time.Time{{}, now.Add(-time.Second), now, now.Add(time.Hour)}
	segs := make([]*networkservice.PathSegment, len(spec))
	for i, b := range spec {
		name := fmt.Sprint("hop-", i)
		if b&4 != 0 {
			name = ""
		}
		seg := &networkservice.PathSegment{Name: name, Id: fmt.Sprint("id-", b&3)}
		seg.Token = tokens[(b>>3)&7](name)
		segs[i] = withExpires(seg, expires[b>>6])
	}
	return segs
}

// expiredToken is a token of hop name that expired a minute before now.
func expiredToken(name string) string {
	tok, _, err := token.NewInsecure(time.Minute, token.WithClock(clock.NewFake(now.Add(-2*time.Minute))), token.WithName(name))(nil)
	if err != nil {
		panic(err)
	}
	return tok
}

func jwtWith(name string, exp json.Number) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": name, "exp": exp}).SignedString([]byte(token.InsecureKey))
	if err != nil {
		panic(err)
	}
	return tok
}

func TestCloseIsAlwaysAccepted(t *testing.T) {
	rec := checks.NewServer()
	chain := next.NewNetworkServiceServer(authorize.NewServer(), rec)
	expired := request(1, signed("nsc", "a", time.Minute), withToken(signed("nsmgr", "b", time.Minute), "garbage")).GetConnection()

	_, err := chain.Close(at(now.Add(time.Hour)), expired)
	require.NoError(t, err)
	require.Len(t, rec.Closes(), 1)
}

func TestAnyAllowsAll(t *testing.T) {
	_, err := authorize.NewServer(authorize.Any()).Request(at(now), request(1, &networkservice.PathSegment{}, &networkservice.PathSegment{}))
	require.NoError(t, err)
}

const onlyNSCs = `package vwire.authorize.callers

deny contains sprintf("%s may not call", [input.path.path_segments[0].name]) if {
	not startswith(input.path.path_segments[0].name, "nsc-")
}
`

func TestOwnPolicies(t *testing.T) {
	own := fstest.MapFS{"callers.rego": {Data: []byte(onlyNSCs)}}
	good := request(1, signed("nsc-1", "a", time.Minute), signed("nsmgr", "b", time.Minute))
	stranger := request(1, signed("web", "a", time.Minute), signed("nsmgr", "b", time.Minute))
	strangerLate := request(1, signed("web", "a", time.Minute), signed("nsmgr", "b", time.Minute))

	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	file := filepath.Join(dir, "callers.rego")
	require.NoError(t, os.WriteFile(file, []byte(onlyNSCs), 0o600))

	tests := []struct {
		name string
		opts []authorize.Option
		late string // the message for a stranger whose token expired
	}{
		{"own only, from an FS", []authorize.Option{authorize.WithPolicyFS(own, "*.rego")},
			"authorize: policy callers: web may not call"},
		{"own only, from a file", []authorize.Option{authorize.WithPolicies(file)},
			"authorize: policy callers: web may not call"},
		{"own and defaults", []authorize.Option{authorize.WithPolicyFS(own, "*.rego"), authorize.WithPolicyFS(authorize.Defaults, "*.rego")},
			"authorize: policy callers: web may not call; policy tokens: segment 0 (web): the token expired at 2025-06-01T12:01:00Z (now 2025-06-01T13:00:00Z)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, authorize.Check(tt.opts...))
			s := authorize.NewServer(tt.opts...)
			_, err := s.Request(at(now), good)
			require.NoError(t, err)
			_, err = s.Request(at(now), stranger)
			require.Equal(t, codes.PermissionDenied, status.Code(err))
			require.Equal(t, "authorize: policy callers: web may not call", status.Convert(err).Message())
			_, err = s.Request(at(now.Add(time.Hour)), strangerLate)
			require.Equal(t, tt.late, status.Convert(err).Message())
		})
	}
}

func TestBadPolicies(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"syntax", "package vwire.authorize.x\ndeny contains", "authorize: policy bad.rego: 2 errors occurred:\nbad.rego:2: rego_parse_error"},
		{"outside the namespace", "package other\ndeny contains 1 if true", "package data.other is not vwire.authorize.<policy name>"},
		{"nested too deep", "package vwire.authorize.x.y\ndeny contains 1 if true", "is not vwire.authorize.<policy name>"},
		{"no deny", "package vwire.authorize.x\nallow if true", "authorize: policy bad.rego: no set rule deny"},
		{"deny is not a set", "package vwire.authorize.x\ndeny := true", "no set rule deny"},
		{"does not compile", "package vwire.authorize.x\ndeny contains y if true", "authorize: compile policies:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := authorize.WithPolicyFS(fstest.MapFS{"bad.rego": {Data: []byte(tt.src)}}, "*.rego")
			err := authorize.Check(opt)
			require.ErrorContains(t, err, tt.want)
			require.PanicsWithValue(t, err.Error(), func() { authorize.NewServer(opt) })
		})
	}
	require.ErrorContains(t, authorize.Check(authorize.WithPolicies("/nonexistent/vw/*.rego")),
		`authorize: policy files "/nonexistent/vw/*.rego": none found`)
}

func TestCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(at(now))
	cancel()
	_, err := authorize.NewServer().Request(ctx, request(1, signed("nsc", "a", time.Minute), signed("nsmgr", "b", time.Minute)))
	require.ErrorIs(t, err, context.Canceled)
}

// BenchmarkRequest authorizes a Request at a forwarder of a remote path: three hops before it,
// one after. The same tokens again are what a hop sees from one peer within a second; new
// tokens each time (more than the cache holds) cost the decoding too; OPA evaluates the
// policies when they are named rather than the defaults.
func BenchmarkRequest(b *testing.B) {
	path := func(i int) *networkservice.NetworkServiceRequest {
		return request(3, signed(fmt.Sprint("nsc-", i), "a", time.Hour), signed(fmt.Sprint("nsmgr-a-", i), "b", time.Hour),
			signed(fmt.Sprint("nsmgr-", i), "c", time.Hour), signed("fwd", "d", time.Hour), signed("nse", "e", time.Hour))
	}
	for _, bc := range []struct {
		name  string
		paths int
		opts  []authorize.Option
	}{
		{name: "same tokens", paths: 1},
		{name: "new tokens", paths: 2 * 4096},
		{name: "same tokens, OPA", paths: 1, opts: []authorize.Option{authorize.WithPolicyFS(authorize.Defaults, "*.rego")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := authorize.NewServer(bc.opts...)
			reqs := make([]*networkservice.NetworkServiceRequest, bc.paths)
			for i := range reqs {
				reqs[i] = path(i)
			}
			ctx := at(now)
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

// FuzzToken feeds any token to the default policies: an answer, allow or PermissionDenied,
// never a panic or another error.
func FuzzToken(f *testing.F) {
	for _, seed := range []string{"", "a.b.c", "e30.e30.", "e30.eyJleHAiOjF9.", signed("nsc", "a", time.Minute).GetToken(), jwtWithout("nsc")} {
		f.Add(seed)
	}
	s := authorize.NewServer()
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := s.Request(at(now), request(1, withToken(signed("nsc", "a", time.Minute), tok), signed("nsmgr", "b", time.Minute)))
		if err != nil && status.Code(err) != codes.PermissionDenied {
			t.Fatalf("token %q: %v", tok, err)
		}
	})
}
