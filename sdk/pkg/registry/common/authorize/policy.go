package authorize

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/updatepath"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/opa"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

type policies struct {
	opa      *opa.Policies
	defaults bool // the policies are the defaults: clearlyAllowed may answer first
}

func compile(sources []opa.Source) (*policies, error) {
	defaults := len(sources) == 0
	if defaults {
		sources = []opa.Source{opa.FS(Defaults, "*.rego")}
	}
	p, err := opa.Compile("vwire.registry", sources...)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	return &policies{opa: p, defaults: defaults}, nil
}

// call is what the policies judge of one Register or Unregister.
type call struct {
	now        time.Time
	self       string // this registry's SPIFFE ID
	operation  string
	name       string
	kind       string
	owners     []string
	registrant string
	peer       string
	segments   []segment
}

// segment is one caller's token and what verifying it showed.
type segment struct {
	token    string
	verified token.Verified
	err      error // why it cannot be trusted; nil: verified
}

// judge gathers the facts of the call in ctx: the path's tokens, each verified.
func (a *authorize[R]) judge(ctx context.Context, operation, name string, owners []string) (*call, error) {
	self, err := spiffe.ID(a.identity)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "authorize: this registry has no SVID to judge calls with yet: %v", err)
	}
	c := &call{now: clock.FromContext(ctx).Now(), self: self.String(), operation: operation, kind: "endpoint", name: name, owners: owners}
	if a.shared {
		c.kind = "service"
	}
	if id, ok := spiffe.PeerID(ctx); ok {
		c.peer = id.String()
	}
	if p := updatepath.FromContext(ctx); p != nil {
		for i, seg := range p.Segments {
			v, err := a.verifier.Verify(seg.Token)
			if err != nil && i == len(p.Segments)-1 {
				v, err = byPeer(ctx, seg.Token, err)
			}
			c.segments = append(c.segments, segment{token: seg.Token, verified: v, err: err})
		}
	}
	if len(c.segments) > 0 && c.segments[0].err == nil {
		c.registrant = c.segments[0].verified.Signer.String()
	}
	return c, nil
}

// pathIDs returns the verified path of c as a record's path_ids: the signer of each token, then
// this registry.
func (c *call) pathIDs() []string {
	ids := make([]string, 0, len(c.segments)+1)
	for _, seg := range c.segments {
		ids = append(ids, seg.verified.Signer.String())
	}
	return append(ids, c.self)
}

// byPeer verifies the caller's own token against the certificate the caller presented in mutual
// TLS, which the handshake verified already: for tokens without an x5c chain, which NSM's
// components make. notByChain is why the token's own chain did not verify it.
func byPeer(ctx context.Context, tok string, notByChain error) (token.Verified, error) {
	cert, ok := spiffe.PeerCertificate(ctx)
	id, idOK := spiffe.PeerID(ctx)
	if !ok || !idOK {
		return token.Verified{}, notByChain
	}
	var claims jwt.RegisteredClaims
	if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256", "ES384", "ES512", "RS256", "EdDSA"}), jwt.WithoutClaimsValidation()); err != nil {
		return token.Verified{}, fmt.Errorf("%w; nor by the caller's mTLS certificate: %w", notByChain, err)
	}
	if claims.Subject != id.String() {
		return token.Verified{}, fmt.Errorf("%w; by the caller's mTLS certificate, of %s, but its sub claim is %q", notByChain, id, claims.Subject)
	}
	return token.Verified{Signer: id, Claims: claims}, nil
}

// allow returns nil if the policies let c through, PermissionDenied with their reasons if not.
func (p *policies) allow(ctx context.Context, c *call) error {
	if p.defaults && c.clearlyAllowed() {
		return nil
	}
	reasons, err := p.opa.Deny(ctx, c.input())
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return status.Errorf(codes.Internal, "authorize: %v", err)
	}
	if len(reasons) == 0 {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "authorize: %s %s: %s", c.operation, c.name, strings.Join(reasons, "; "))
}

// clearlyAllowed reports whether the default policies surely let c through: a peer, every token
// verified and alive (an integer exp after now), the last one signed by the peer and addressed to
// this registry, each other addressed to the signer of the next, and the registrant one of the
// owners if there are some (but for a service's Register, open to all). Anything else is left
// to OPA, which decides and says why: the Rego files stay the definition.
func (c *call) clearlyAllowed() bool {
	if c.peer == "" || len(c.segments) == 0 {
		return false
	}
	if len(c.owners) > 0 && !slices.Contains(c.owners, c.registrant) && (c.kind != "service" || c.operation != "register") {
		return false
	}
	for i, seg := range c.segments {
		exp := seg.verified.Claims.ExpiresAt
		if seg.err != nil || exp == nil || !exp.Equal(exp.Truncate(time.Second)) || !exp.After(c.now) {
			return false
		}
		to := c.self
		if i+1 < len(c.segments) {
			to = c.segments[i+1].verified.Signer.String()
		}
		if !slices.Contains(seg.verified.Claims.Audience, to) {
			return false
		}
	}
	return c.segments[len(c.segments)-1].verified.Signer.String() == c.peer
}

// input returns c as the policies' input (see the package comment).
func (c *call) input() ast.Value {
	owners := make([]*ast.Term, 0, len(c.owners))
	for _, o := range c.owners {
		owners = append(owners, ast.StringTerm(o))
	}
	segs := make([]*ast.Term, 0, len(c.segments))
	for _, seg := range c.segments {
		signer, why := "", ""
		if seg.err == nil {
			signer = seg.verified.Signer.String()
		} else {
			why = seg.err.Error()
		}
		segs = append(segs, ast.ObjectTerm(
			ast.Item(ast.StringTerm("token"), ast.StringTerm(seg.token)),
			ast.Item(ast.StringTerm("claims"), claims(seg.token)),
			ast.Item(ast.StringTerm("signer"), ast.StringTerm(signer)),
			ast.Item(ast.StringTerm("error"), ast.StringTerm(why)),
		))
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("now"), ast.IntNumberTerm(int(c.now.UnixNano()))),
		ast.Item(ast.StringTerm("identity"), ast.StringTerm(c.self)),
		ast.Item(ast.StringTerm("operation"), ast.StringTerm(c.operation)),
		ast.Item(ast.StringTerm("name"), ast.StringTerm(c.name)),
		ast.Item(ast.StringTerm("kind"), ast.StringTerm(c.kind)),
		ast.Item(ast.StringTerm("owners"), ast.ArrayTerm(owners...)),
		ast.Item(ast.StringTerm("registrant"), ast.StringTerm(c.registrant)),
		ast.Item(ast.StringTerm("peer"), ast.StringTerm(c.peer)),
		ast.Item(ast.StringTerm("path"), ast.ObjectTerm(ast.Item(ast.StringTerm("path_segments"), ast.ArrayTerm(segs...)))),
	)
}

// claims returns the payload of the JWT tok, unverified, as a Rego value; null if tok is not a
// JWT.
func claims(tok string) *ast.Term {
	payload := jwt.MapClaims{}
	if _, _, err := jwt.NewParser(jwt.WithJSONNumber()).ParseUnverified(tok, payload); err != nil {
		return ast.NullTerm()
	}
	v, err := ast.InterfaceToValue(map[string]any(payload))
	if err != nil {
		return ast.NullTerm()
	}
	return ast.NewTerm(v)
}
