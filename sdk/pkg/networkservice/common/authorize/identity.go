package authorize

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"sync"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

// WithIdentity makes the server judge who signed the path (policies signed, chained and owner):
// src is this hop's SVID source, whose SPIFFE ID is this hop's identity and whose trust bundles
// verify the tokens. Without it (an insecure mesh, in-process chains) those policies judge
// nothing and every Close passes.
func WithIdentity(src spiffe.Source) Option {
	if src == nil {
		panic("authorize.WithIdentity: nil source")
	}
	return func(o *options) { o.identity = src }
}

// identity is what a server with an identity knows beyond its policies.
type identity struct {
	src      spiffe.Source
	verifier *token.Verifier

	mu     sync.Mutex
	owners map[string]*owner // by this hop's connection ID; see owner
}

// owner is who may refresh and close one connection: the SPIFFE IDs of the hops before this one
// at its last accepted Request, the first of them (its client) the owner.
//
// It is kept here, by connection ID, and not in the connection's metadata, because it must
// outlive what metadata keeps: a refused Close has to leave it in place (metadata drops a
// connection's state on every Close), and authorize runs before metadata. Accepted Closes remove
// it, including those of timeout, which re-enter the chain with the context of the last Request.
type owner struct {
	path []string // path[0] is the owner
}

func newIdentity(src spiffe.Source) *identity {
	return &identity{src: src, verifier: token.NewVerifier(src), owners: map[string]*owner{}}
}

// self returns this hop's SPIFFE ID: that of its SVID now.
func (id *identity) self() (string, error) {
	own, err := spiffe.ID(id.src)
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "authorize: this hop has no SVID to judge the path with yet: %v", err)
	}
	return own.String(), nil
}

// caller is the mutual-TLS view of the call: the caller's SPIFFE ID and certificate, if any.
type caller struct {
	id   string
	cert *x509.Certificate
}

func callerOf(ctx context.Context) caller {
	cert, ok := spiffe.PeerCertificate(ctx)
	if !ok {
		return caller{}
	}
	id, ok := spiffe.PeerID(ctx)
	if !ok {
		return caller{cert: cert}
	}
	return caller{id: id.String(), cert: cert}
}

// ownerOf returns the first hop recorded for connection id, "" if unknown.
func (id *identity) ownerOf(connID string) string {
	id.mu.Lock()
	defer id.mu.Unlock()
	if o, ok := id.owners[connID]; ok {
		return o.path[0]
	}
	return ""
}

// record remembers the hops before this one of an accepted Request: they are those whose tokens
// the policies verified, so segment i's signer is the sub of its token.
func (id *identity) record(s *server, path *networkservice.Path) {
	segs := path.GetPathSegments()[:path.GetIndex()]
	hops := make([]string, len(segs))
	for i, seg := range segs {
		hops[i] = subject(s.claimsOf(seg.GetToken()))
	}
	conn := path.GetPathSegments()[path.GetIndex()].GetId()
	id.mu.Lock()
	defer id.mu.Unlock()
	id.owners[conn] = &owner{path: hops}
}

// mayClose refuses the Close of a known connection by a caller that is not one of the hops of
// its path before this one, or that does not close it on its owner's behalf. A Close without a
// caller certificate comes from inside the process (a component serves over mutual TLS only):
// timeout's, or the component's own cleanup.
//
// Being a hop of the path is not enough: a hop passes on the Close of a connection it does not
// know (a restarted nsmgr lets its clients clean up), so a stranger could reach this hop through
// its real previous hop with a connection ID of its own making. What the stranger cannot make is
// the owner's token: the Close's path must begin with a token whose subject is the owner. Its
// expiry does not matter (cleanup never depends on a live token), and every Close a hop sends on
// its own (heal leaving a hop, orphan, timeout) carries the path its owner's Request set.
func (id *identity) mayClose(ctx context.Context, s *server, conn *networkservice.Connection) error {
	c := callerOf(ctx)
	if c.cert == nil {
		return nil
	}
	connID := conn.GetId()
	id.mu.Lock()
	o, known := id.owners[connID]
	id.mu.Unlock()
	if !known {
		return nil
	}
	if !slices.Contains(o.path, c.id) {
		return status.Errorf(codes.PermissionDenied,
			"authorize: connection %s belongs to %s (its path to this hop: %v); %s may not close it",
			connID, o.path[0], o.path, c.id)
	}
	var first string
	if segs := conn.GetPath().GetPathSegments(); len(segs) > 0 {
		first = subject(s.claimsOf(segs[0].GetToken()))
	}
	if first != o.path[0] {
		return status.Errorf(codes.PermissionDenied,
			"authorize: connection %s belongs to %s; this Close, passed on by %s, begins with a token of %q, "+
				"and a hop closes a connection only on its owner's behalf", connID, o.path[0], c.id, first)
	}
	return nil
}

func (id *identity) forget(connID string) {
	id.mu.Lock()
	defer id.mu.Unlock()
	delete(id.owners, connID)
}

var (
	subKey = ast.InternedTerm("sub")
	audKey = ast.InternedTerm("aud")
)

// subject returns the sub claim of claims, "" if it is not a string.
func subject(claims *ast.Term) string {
	obj, ok := claims.Value.(ast.Object)
	if !ok {
		return ""
	}
	if v := obj.Get(subKey); v != nil {
		if s, ok := v.Value.(ast.String); ok {
			return string(s)
		}
	}
	return ""
}

// addressedTo reports whether the aud claim of claims names want, as chained.rego's audience
// reads it: one string, or a list of which only the strings count.
func addressedTo(claims *ast.Term, want string) bool {
	obj, ok := claims.Value.(ast.Object)
	if !ok {
		return false
	}
	v := obj.Get(audKey)
	if v == nil {
		return false
	}
	switch aud := v.Value.(type) {
	case ast.String:
		return string(aud) == want
	case *ast.Array:
		found := false
		aud.Foreach(func(t *ast.Term) {
			if s, ok := t.Value.(ast.String); ok && string(s) == want {
				found = true
			}
		})
		return found
	}
	return false
}

// allowedWithIdentity reports whether signed.rego, chained.rego and owner.rego surely let path
// through for caller c, this hop being self and the connection's recorded owner owner ("" if
// none): a caller with a certificate, a previous hop, every token before this hop verified, the
// previous one signed by the caller, each addressed to the next hop, and the first hop the
// owner. allowedByDefaults has checked the path's shape (the index is inside it).
func (id *identity) allowedWithIdentity(s *server, c caller, self, owner string, path *networkservice.Path) bool {
	segs := path.GetPathSegments()
	index := int(path.GetIndex())
	if c.id == "" || index == 0 {
		return false
	}
	next := self
	for i := index - 1; i >= 0; i-- {
		tok := segs[i].GetToken()
		verified, err := id.verifier.Verify(tok)
		if err != nil {
			return false
		}
		if i == index-1 && verified.Signer.String() != c.id {
			return false
		}
		claims := s.claimsOf(tok)
		if !addressedTo(claims, next) {
			return false
		}
		next = subject(claims)
		if next == "" {
			return false
		}
	}
	return owner == "" || owner == next // next is now segment 0's sub
}

// identityInput adds to the policies' input what a server with an identity knows: its own ID,
// the caller's, the connection's owner, and for each segment before this hop who signed its
// token.
func (id *identity) input(input ast.Object, c caller, self, owner string, segs []*ast.Term, path *networkservice.Path) {
	certificate := ""
	if c.cert != nil {
		certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}))
	}
	input.Insert(ast.InternedTerm("identity"), ast.StringTerm(self))
	input.Insert(ast.InternedTerm("owner"), ast.StringTerm(owner))
	input.Insert(ast.InternedTerm("peer"), ast.ObjectTerm(
		ast.Item(ast.InternedTerm("id"), ast.StringTerm(c.id)),
		ast.Item(ast.InternedTerm("certificate"), ast.StringTerm(certificate)),
	))
	for i, seg := range path.GetPathSegments()[:min(int(path.GetIndex()), len(segs))] {
		signer, unverified := "", ""
		if verified, err := id.verifier.Verify(seg.GetToken()); err != nil {
			unverified = err.Error()
		} else {
			signer = verified.Signer.String()
		}
		obj := segs[i].Value.(ast.Object)
		obj.Insert(ast.InternedTerm("signer"), ast.StringTerm(signer))
		obj.Insert(ast.InternedTerm("unverified"), ast.StringTerm(unverified))
	}
}
