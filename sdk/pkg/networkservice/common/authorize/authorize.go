// Package authorize lets a Request through only if the connection's path satisfies the
// component's policies, written in Rego and run with Open Policy Agent, and, on a component with
// an identity, lets only the hops of a connection's path close it.
//
// A policy is a Rego module in a package under vwire.authorize (its name is the last part:
// vwire.authorize.tokens is policy "tokens") defining a set rule deny: each string in it is a
// reason to refuse. A Request is refused with PermissionDenied, naming each policy and its
// reasons, if any policy denies. The input is
//
//	{"now": <ns since the Unix epoch, from the context's clock>,
//	 "path": {"index": <this hop>, "path_segments": [{"name", "id", "token", "expires": <ns, 0 unset>,
//	                                                  "claims": <token's JWT payload, null if not a JWT>,
//	                                                  "signer", "unverified"}]},
//	 "identity": <this hop's SPIFFE ID>, "owner": <the connection's first hop, "" if new>,
//	 "peer": {"id": <the caller's SPIFFE ID, "" without TLS>, "certificate": <its certificate, PEM>}}
//
// where only the segments before this hop's have claims (decoded here; the policies judge them),
// and identity, owner, peer, signer and unverified are there only on a component with an identity
// (WithIdentity): signer is the SPIFFE ID whose SVID signed the segment's token, as
// token.Verifier finds it from the token's x5c chain and the trust bundle ("" if it cannot be
// trusted, and unverified says why).
//
// The default policies (Defaults):
//   - "tokens": every hop before this one has a token that parses as a JWT and has not expired,
//     by the token's exp claim and by its segment's expires;
//   - "path": every segment has a name and an ID, no two share an ID, the index is inside the path;
//   - "signed" (identity): the caller came over mutual TLS, this hop is not the first, every token
//     before this hop is signed by the SVID its sub names, the previous hop's by the caller;
//   - "chained" (identity): each of those tokens is addressed (aud) to the hop after it, the
//     previous hop's to this one, as NSM's tokens_chained requires;
//   - "owner" (identity): a Request for a connection this hop accepted before comes from the
//     path of the same first hop (its client, the owner).
//
// Policies are compiled once, in NewServer; a refused Request never reaches next.
//
// Evaluating policies costs tens of microseconds a Request, so three things keep it off the
// path of every Request. A server keeps the claims of the last 4096 tokens it decoded, and its
// Verifier the verdicts of as many tokens (claims and signatures never change; the policies still
// judge them at each Request): a signature is checked once per token, about 0.2 ms, then looked
// up for tens of nanoseconds. And with the default policies (no option naming others), a path
// that they clearly allow is let through without OPA, by Go code that checks what the Rego does;
// any other is evaluated by OPA, so denials and their reasons are always the Rego's.
//
// Close is not judged by the policies: cleanup never depends on a live token, so a connection
// is closed even when its tokens expired long ago (refusing it would leave interfaces, routes and
// address leases behind for good, as NSM users meet after a crash). Without an identity every
// Close passes. With one, the server remembers, for each connection it accepted (by this hop's
// connection ID), the SPIFFE IDs of the hops before it, and refuses with PermissionDenied, and
// without calling next, the Close of such a connection by a caller that is none of them, or
// whose path does not begin with a token of the owner (expired or not); a Close it passes makes
// it forget the connection. A Close without TLS on a component with an
// identity can only come from the component itself and passes, and so does the Close of a
// connection the server does not know (a restarted hop lets its clients clean up).
//
// It belongs after updatepath (the index is this hop's) and updatetoken (the previous hop's
// token is the one its call carried), and before metadata, timeout and every element that sets
// something up. There is no client: a client receives the path back from hops it chose to call
// over mutual TLS.
package authorize

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/lru"
	"vwire.dev/sdk/pkg/tools/opa"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// Defaults holds the default policies (tokens, path, signed, chained, owner): pass
// WithPolicyFS(authorize.Defaults, "*.rego") to keep them beside policies of your own.
//
//go:embed *.rego
var Defaults embed.FS

// Option changes the policies of NewServer.
type Option func(*options)

type options struct {
	sources  []opa.Source
	any      bool
	identity spiffe.Source
}

// WithPolicies uses the Rego files at paths (or glob patterns) instead of the defaults;
// several calls add up.
func WithPolicies(paths ...string) Option {
	return func(o *options) { o.sources = append(o.sources, opa.Files(paths...)...) }
}

// WithPolicyFS uses the Rego files of fsys matching patterns (fs.Glob) instead of the
// defaults; several calls add up.
func WithPolicyFS(fsys fs.FS, patterns ...string) Option {
	return func(o *options) { o.sources = append(o.sources, opa.FS(fsys, patterns...)) }
}

// Any lets every Request through, for tests and for meshes that authorize elsewhere.
func Any() Option { return func(o *options) { o.any = true } }

// NewServer returns authorize with the policies opts give (default: Defaults). It panics if a
// policy cannot be read or compiled: check a configuration first with Check.
func NewServer(opts ...Option) networkservice.NetworkServiceServer {
	s, err := compile(opts)
	if err != nil {
		panic(err.Error())
	}
	return s
}

// Check reports whether the policies opts give load and compile, for a component to refuse a
// bad configuration at start with a message of its own.
func Check(opts ...Option) error {
	_, err := compile(opts)
	return err
}

type server struct {
	policies *opa.Policies                 // nil: allow all
	identity *identity                     // nil: an insecure mesh
	claims   *lru.Cache[string, *ast.Term] // by token
	defaults bool                          // the policies are the defaults: allowedByDefaults may answer first
}

func compile(opts []Option) (*server, error) {
	o := &options{}
	for _, opt := range opts {
		opt(o)
	}
	if o.any {
		return &server{}, nil
	}
	defaults := len(o.sources) == 0
	if defaults {
		o.sources = []opa.Source{opa.FS(Defaults, "*.rego")}
	}
	policies, err := opa.Compile("vwire.authorize", o.sources...)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	s := &server{policies: policies, claims: lru.New[string, *ast.Term](claimsCacheSize), defaults: defaults}
	if o.identity != nil {
		s.identity = newIdentity(o.identity)
	}
	return s, nil
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if s.policies == nil {
		return next.Server(ctx).Request(ctx, req)
	}
	path := req.GetConnection().GetPath()
	if err := s.check(ctx, path); err != nil {
		return nil, err
	}
	conn, err := next.Server(ctx).Request(ctx, req)
	if err == nil && s.identity != nil {
		s.identity.record(s, path)
	}
	return conn, err
}

// Close passes without an identity; with one, a known connection's Close passes only from the
// hops of its path: see the package comment.
func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	if s.identity == nil {
		return next.Server(ctx).Close(ctx, conn)
	}
	if err := s.identity.mayClose(ctx, s, conn); err != nil {
		return nil, err
	}
	defer s.identity.forget(conn.GetId())
	return next.Server(ctx).Close(ctx, conn)
}

func (s *server) check(ctx context.Context, path *networkservice.Path) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := clock.FromContext(ctx).Now().UnixNano()
	var (
		c           caller
		self, owner string
	)
	if s.identity != nil {
		var err error
		if self, err = s.identity.self(); err != nil {
			return err
		}
		c = callerOf(ctx)
		if index := int(path.GetIndex()); index < len(path.GetPathSegments()) {
			owner = s.identity.ownerOf(path.GetPathSegments()[index].GetId())
		}
	}
	if s.defaults && s.allowedByDefaults(now, path) &&
		(s.identity == nil || s.identity.allowedWithIdentity(s, c, self, owner, path)) {
		return nil
	}
	pathTerm, segs := s.pathTerm(path)
	input := ast.NewObject(
		ast.Item(ast.InternedTerm("now"), ast.InternedTerm(now)),
		ast.Item(ast.InternedTerm("path"), pathTerm),
	)
	if s.identity != nil {
		s.identity.input(input, c, self, owner, segs, path)
	}
	reasons, err := s.policies.Deny(ctx, input)
	switch {
	case err != nil && ctx.Err() != nil:
		return err
	case err != nil:
		return status.Errorf(codes.Internal, "authorize: %v", err)
	case len(reasons) > 0:
		return status.Errorf(codes.PermissionDenied, "authorize: %s", strings.Join(reasons, "; "))
	}
	return nil
}

// pathTerm returns the path as the policies read it, and its segments' objects.
func (s *server) pathTerm(path *networkservice.Path) (*ast.Term, []*ast.Term) {
	segs := make([]*ast.Term, 0, len(path.GetPathSegments()))
	for i, seg := range path.GetPathSegments() {
		obj := ast.NewObject(
			ast.Item(ast.InternedTerm("name"), ast.StringTerm(seg.GetName())),
			ast.Item(ast.InternedTerm("id"), ast.StringTerm(seg.GetId())),
			ast.Item(ast.InternedTerm("token"), ast.StringTerm(seg.GetToken())),
			ast.Item(ast.InternedTerm("expires"), ast.InternedTerm(nanos(seg.GetExpires()))),
		)
		if i < int(path.GetIndex()) { // the tokens a policy judges
			obj.Insert(ast.InternedTerm("claims"), s.claimsOf(seg.GetToken()))
		}
		segs = append(segs, ast.NewTerm(obj))
	}
	return ast.ObjectTerm(
		ast.Item(ast.InternedTerm("index"), ast.InternedTerm(int(path.GetIndex()))),
		ast.Item(ast.InternedTerm("path_segments"), ast.ArrayTerm(segs...)),
	), segs
}

// nanos returns ts in nanoseconds since the Unix epoch: 0 when unset, at least 1 when set (a
// time at or before the epoch has long expired), at most what an int64 holds.
func nanos(ts *timestamppb.Timestamp) int64 {
	switch {
	case ts == nil:
		return 0
	case ts.GetSeconds() <= 0:
		return 1
	case ts.GetSeconds() >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	}
	return ts.AsTime().UnixNano()
}

// claims returns the payload of the JWT tok as a Rego object, or null if tok is not a JWT:
// three base64url parts, the first two JSON objects. The signature is not checked. Decoding
// here rather than with io.jwt.decode in Rego saves most of the evaluation's time.
func claims(tok string) *ast.Term {
	header, rest, _ := strings.Cut(tok, ".")
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return ast.InternedNullTerm
	}
	h, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil || !json.Valid(h) || !bytes.HasPrefix(bytes.TrimSpace(h), []byte("{")) {
		return ast.InternedNullTerm
	}
	if _, err := base64.RawURLEncoding.DecodeString(sig); err != nil {
		return ast.InternedNullTerm
	}
	p, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return ast.InternedNullTerm
	}
	v, err := ast.ValueFromReader(bytes.NewReader(p))
	if _, isObject := v.(ast.Object); err != nil || !isObject {
		return ast.InternedNullTerm
	}
	return ast.NewTerm(v)
}
