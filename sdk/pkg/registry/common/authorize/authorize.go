// Package authorize decides who may register and unregister what in a registry: a Register or
// Unregister passes only if the path of its callers satisfies the registry's policies, written in
// Rego and run with Open Policy Agent, so that no workload takes over or removes another's
// endpoint by using its name.
//
// Trust model. Every caller sends its own token with each call, a JWT signed by its SVID's key
// that carries the SVID's chain (x5c), with the callee's SPIFFE ID as audience; a hop that passes
// a registration on (an nsmgr, for the endpoints of its node) sends the tokens of the callers
// before it as the path (registry/common/updatepath, which puts the caller's own token last). The
// registry verifies every token itself, with the trust bundle (token.Verifier): its chain is an
// SVID of a trusted domain, it is signed by that SVID's key and its sub is that SVID's SPIFFE
// ID. The last token must be signed by the SVID the caller presented in mutual TLS and addressed
// to this registry, and each token before it must be addressed to the hop after it. NSM's
// components sign their tokens without the chain: the caller's own token is then verified
// against the certificate of the mTLS handshake, so that they may register here directly. So the
// registrant, the subject of the first token, proved its identity to the first hop with a token
// that hop could not forge, and a hop can pass on only tokens that were sent to itself, while
// they last (their exp). What a hop that was sent a token can do with it in that time, it can
// do in the registrant's name: the registrant trusts its nsmgr for as long as its token lives
// (NSM_MAX_TOKEN_LIFETIME), as in NSM.
//
// The policy input is
//
//	{"now": <ns since the Unix epoch, from the context's clock>, "identity": <this registry's SPIFFE ID>,
//	 "operation": "register" | "unregister", "kind": "endpoint" | "service", "name": <the record's name>,
//	 "owners": [<the identities that registered that name: one for an endpoint, none if nobody holds it>],
//	 "registrant": <the signer of the first token, "" if it cannot be trusted>,
//	 "peer": <the SPIFFE ID of the caller's mTLS certificate, "" without TLS>,
//	 "path": {"path_segments": [{"token", "claims": <JWT payload, null if not a JWT>,
//	                             "signer": <verified SPIFFE ID, "">, "error": <why not verified>}]}}
//
// A policy is a Rego module in a package under vwire.registry (vwire.registry.owner is policy
// "owner") with a set rule deny: each string in it is a reason to refuse (sdk/pkg/tools/opa), and
// a call is refused with PermissionDenied naming each policy and reason. The defaults
// (Defaults), NSM's for the registry: "tokens", every token is a JWT that has not expired;
// "signed", every token is signed by the SVID it names, the last by the caller's mTLS peer;
// "path", the tokens are chained by audience up to this registry; "owner", only the registrant of
// an endpoint may change or unregister it, only one of a service's unregister it. WithPolicies replaces them (the cmds read
// NSM_REGISTRY_SERVER_POLICIES). Policies are compiled once, in the constructor. Registrations
// are seldom (a refresh a minute per endpoint), but a call that the defaults clearly allow is
// still let through by Go without evaluating them, and the Verifier checks each token once.
//
// A Register that passes goes on with the verified path as the record's path_ids: the signer of
// each token, the registrant first, then this registry's SPIFFE ID (NSM's path_ids are SPIFFE
// IDs too).
//
// Owners: the first successful Register of an endpoint's name makes its registrant the owner,
// and Unregister forgets it. A network service is shared by the endpoints that offer it: any
// caller may register it, and each that did becomes one of its owners, who alone may unregister
// it. For a name it has not seen, authorize looks the record up in the rest of the chain (the
// store) and takes the first of its stored path_ids as its owner, so that a registry restarted
// with its store (Kubernetes) keeps the owners of what it stored. Find is not restricted. Events
// the registry starts itself (an expiry, through begin) are not a caller's doing and pass.
//
// Without WithIdentity (a mesh without identities, which the cmds log) authorize keeps only the
// owners of endpoints, by who the registrant claims to be, unchecked: the first of the path_ids
// it sent, else the sub of the first token, else anonymous. Policies are not evaluated then, but
// compiled, so that a bad file fails at start. Any lets every call through.
//
// Authorize belongs in a registry server chain after updatepath (the path) and after begin (one
// event per name at a time, and expiries pass through it so that their owners are forgotten).
package authorize

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"sync"

	"github.com/golang-jwt/jwt/v5"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/registry/common/begin"
	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/opa"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// Defaults holds the default policies: pass WithPolicyFS(authorize.Defaults, "*.rego") to keep
// them beside policies of your own.
//
//go:embed *.rego
var Defaults embed.FS

// Option configures authorize.
type Option func(*options)

type options struct {
	sources  []opa.Source
	identity spiffe.Source
	any      bool
}

// WithIdentity judges calls by their verified tokens and policies: src is this registry's SVID
// source, whose SPIFFE ID the caller's token must be addressed to and whose trust bundles verify
// the tokens. Without it (a mesh without identities) owners are kept by claim and policies are
// not evaluated.
func WithIdentity(src spiffe.Source) Option {
	if src == nil {
		panic("authorize.WithIdentity: nil source")
	}
	return func(o *options) { o.identity = src }
}

// WithPolicies uses the Rego files at paths (or glob patterns) instead of the defaults; several
// calls add up.
func WithPolicies(paths ...string) Option {
	return func(o *options) { o.sources = append(o.sources, opa.Files(paths...)...) }
}

// WithPolicyFS uses the Rego files of fsys matching patterns (fs.Glob) instead of the defaults;
// several calls add up.
func WithPolicyFS(fsys fs.FS, patterns ...string) Option {
	return func(o *options) { o.sources = append(o.sources, opa.FS(fsys, patterns...)) }
}

// Any lets every caller register and unregister every name.
func Any() Option { return func(o *options) { o.any = true } }

// NewNS returns authorize for network services, shared by the endpoints that offer them: any
// caller may register one, only one of its registrants may unregister it. It panics if the
// policies do not load or compile: check a configuration with Check first.
func NewNS(opts ...Option) next.NS { return must(newAuthorize[*registry.NetworkService](true, opts)) }

// NewNSE returns authorize for network service endpoints, each owned by its registrant. It
// panics as NewNS does.
func NewNSE(opts ...Option) next.NSE {
	return must(newAuthorize[*registry.NetworkServiceEndpoint](false, opts))
}

// Check reports whether opts make a working authorize, for a component to refuse a bad
// configuration at start with a message of its own.
func Check(opts ...Option) error {
	_, err := newAuthorize[*registry.NetworkServiceEndpoint](false, opts)
	return err
}

func must[R record](a *authorize[R], err error) *authorize[R] {
	if err != nil {
		panic(err.Error())
	}
	return a
}

// record is what authorize reads of a record: both registry records have path_ids.
type record interface {
	next.Record
	GetPathIds() []string
}

type authorize[R record] struct {
	any      bool
	identity spiffe.Source   // nil: a mesh without identities
	policies *policies       // nil without an identity
	verifier *token.Verifier // nil without an identity
	shared   bool            // names are services: any caller may register them

	mu     sync.Mutex
	owners map[string][]string // name -> the identities that registered it: one for an endpoint
}

func newAuthorize[R record](shared bool, opts []Option) (*authorize[R], error) {
	o := &options{}
	for _, opt := range opts {
		opt(o)
	}
	a := &authorize[R]{any: o.any, identity: o.identity, shared: shared, owners: map[string][]string{}}
	if o.any {
		return a, nil
	}
	p, err := compile(o.sources)
	if err != nil {
		return nil, err
	}
	if o.identity != nil {
		a.policies, a.verifier = p, token.NewVerifier(o.identity)
	}
	return a, nil
}

func (a *authorize[R]) Register(ctx context.Context, r R) (R, error) {
	if a.any || begin.Background(ctx) {
		return next.Of[R](ctx).Register(ctx, r)
	}
	who, verified, err := a.check(ctx, "register", r)
	if err != nil {
		var zero R
		return zero, err
	}
	if verified != nil {
		r = withPathIDs(r, verified)
	}
	added := a.add(r.GetName(), who)
	got, err := next.Of[R](ctx).Register(ctx, r)
	if err != nil && added {
		a.remove(r.GetName(), who)
	}
	return got, err
}

func (a *authorize[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	return next.Of[R](ctx).Find(ctx, q, send)
}

func (a *authorize[R]) Unregister(ctx context.Context, r R) error {
	if !a.any && !begin.Background(ctx) {
		if _, _, err := a.check(ctx, "unregister", r); err != nil {
			return err
		}
	}
	if err := next.Of[R](ctx).Unregister(ctx, r); err != nil {
		return err
	}
	a.forget(r.GetName())
	return nil
}

// check returns the identity of the registrant of the call in ctx if it may do operation on r,
// PermissionDenied if not; with an identity also the verified path_ids of the record: the
// signers of the path, then this registry.
func (a *authorize[R]) check(ctx context.Context, operation string, r R) (who string, verified []string, err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	name := r.GetName()
	owners, err := a.ownersOf(ctx, name)
	if err != nil {
		return "", nil, err
	}
	if a.identity == nil {
		who := claimed(ctx, r)
		if !a.shared && len(owners) > 0 && owners[0] != who {
			return "", nil, status.Errorf(codes.PermissionDenied, "authorize: %q is registered by %s; %s may not change or unregister it", name, anonymous(owners[0]), anonymous(who))
		}
		return who, nil, nil
	}
	c, err := a.judge(ctx, operation, name, owners)
	if err != nil {
		return "", nil, err
	}
	if err := a.policies.allow(ctx, c); err != nil {
		return "", nil, err
	}
	return c.registrant, c.pathIDs(), nil
}

// named returns a record of type R that has only a name: a query for it.
func named[R record](name string) R {
	var r R
	switch any(r).(type) {
	case *registry.NetworkService:
		return any(&registry.NetworkService{Name: name}).(R)
	case *registry.NetworkServiceEndpoint:
		return any(&registry.NetworkServiceEndpoint{Name: name}).(R)
	}
	return r
}

// withPathIDs returns a copy of r whose path_ids are ids.
func withPathIDs[R record](r R, ids []string) R {
	r = proto.Clone(r).(R)
	switch rec := any(r).(type) {
	case *registry.NetworkService:
		rec.PathIds = ids
	case *registry.NetworkServiceEndpoint:
		rec.PathIds = ids
	}
	return r
}

// claimed returns who the registrant of r claims to be, unverified: the first of the path_ids
// the caller sent (all but the last, this hop's, which updatepath added), which every hop carries
// on, else the sub of the path's first token, else "" (anonymous).
func claimed[R record](ctx context.Context, r R) string {
	if who, ok := registrantIn(r.GetPathIds()); ok {
		return who
	}
	if p := updatepath.FromContext(ctx); p != nil && len(p.Segments) > 0 {
		var claims jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(p.Segments[0].Token, &claims); err == nil {
			return claims.Subject
		}
	}
	return ""
}

// registrantIn returns the first of path_ids that name a registrant before the registry that
// stored them (updatepath's last), if there is one.
func registrantIn(ids []string) (string, bool) {
	if len(ids) > 1 {
		return ids[0], true
	}
	return "", false
}

func anonymous(id string) string {
	if id == "" {
		return "an anonymous caller"
	}
	return `"` + id + `"`
}

// ownersOf returns the identities that registered name: those this element saw register it, or
// for a name it has not seen (new, or stored before the registry restarted) the registrant the
// stored record names, which it then keeps.
func (a *authorize[R]) ownersOf(ctx context.Context, name string) ([]string, error) {
	a.mu.Lock()
	owners, ok := a.owners[name]
	a.mu.Unlock()
	if ok {
		return slices.Clone(owners), nil
	}
	var (
		stored []string
		found  bool
	)
	err := next.Of[R](ctx).Find(ctx, &next.Query[R]{Record: named[R](name)}, func(ev *next.Event[R]) error {
		if ev.Record.GetName() == name && !ev.Deleted {
			stored, found = ev.Record.GetPathIds(), true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("authorize: look up the registrant of the stored %q: %w", name, err)
	}
	if !found {
		return nil, nil // a new name
	}
	who, _ := registrantIn(stored) // none: an anonymous registrant
	a.mu.Lock()
	defer a.mu.Unlock()
	if owners, ok := a.owners[name]; ok { // registered meanwhile
		return slices.Clone(owners), nil
	}
	a.owners[name] = []string{who}
	return []string{who}, nil
}

// add makes who an owner of name, the first of an endpoint or one more of a service, and reports
// whether it did.
func (a *authorize[R]) add(name, who string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	owners := a.owners[name]
	if slices.Contains(owners, who) || (!a.shared && len(owners) > 0) {
		return false
	}
	a.owners[name] = append(owners, who)
	return true
}

// remove undoes add.
func (a *authorize[R]) remove(name, who string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	owners := slices.DeleteFunc(slices.Clone(a.owners[name]), func(o string) bool { return o == who })
	if len(owners) == 0 {
		delete(a.owners, name)
		return
	}
	a.owners[name] = owners
}

func (a *authorize[R]) forget(name string) {
	a.mu.Lock()
	delete(a.owners, name)
	a.mu.Unlock()
}
