package monitor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"vwire.dev/sdk/pkg/tools/lru"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// WithOperators names the SPIFFE IDs that see every connection of a Server (an operator's
// tools); they too get no token but their own. NewClient ignores it.
func WithOperators(ids ...spiffeid.ID) Option {
	return func(o *options) {
		for _, id := range ids {
			o.operators = append(o.operators, id.String())
		}
	}
}

// record is a connection as a Server holds it, and who asked for it.
type record struct {
	conn   *networkservice.Connection // as returned at the server's place; read only once recorded
	caller string                     // the mutual-TLS caller of its last Request here, "" without TLS
	// subjects is the sub claim of each segment's token ("" if none), decoded when a subscriber
	// with an identity first needs it; guarded by the Server's mu.
	subjects []string
}

// subjectCacheSize bounds how many tokens' sub claims a Server keeps decoded: a token is the
// same for every connection its hop signs within a second, and decoding one costs more than
// looking it up.
const subjectCacheSize = 1024

// callerOf returns the SPIFFE ID of the mutual-TLS caller of the call ctx belongs to, "" if none.
func callerOf(ctx context.Context) string {
	if id, ok := spiffe.PeerID(ctx); ok {
		return id.String()
	}
	return ""
}

// hops returns the sub claim of each of the connection's tokens, decoding those subjects does
// not know yet; the caller holds the Server's mu.
func (r *record) hops(subjects *lru.Cache[string, string]) []string {
	if r.subjects == nil {
		segs := r.conn.GetPath().GetPathSegments()
		r.subjects = make([]string, len(segs))
		for i, seg := range segs {
			sub, ok := subjects.Get(seg.GetToken())
			if !ok {
				sub = subject(seg.GetToken())
				subjects.Add(seg.GetToken(), sub)
			}
			r.subjects[i] = sub
		}
	}
	return r.subjects
}

// subject returns the sub claim of the JWT tok, "" if it has none. The signature is not checked:
// the tokens before this hop were verified by authorize, those after it came from the hops this
// one chose to call. (Decoding only the payload costs a fraction of a full parse, and happens at
// every Request that a subscriber with an identity may see.)
func subject(tok string) string {
	_, rest, _ := strings.Cut(tok, ".")
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return ""
	}
	return claims.Sub
}

// viewer is who a subscriber is. Without TLS (an insecure mesh, or a call within the process)
// it sees every connection whole, as before identities; with it, only those its SPIFFE ID takes
// part in (it requested the connection here, or signed one of its tokens), unless it is an
// operator, and never another hop's token.
type viewer struct {
	secure   bool
	id       string // "" if its certificate names no SPIFFE ID: it sees nothing
	operator bool
}

func (s *Server) viewerOf(ctx context.Context) viewer {
	if _, ok := spiffe.PeerCertificate(ctx); !ok {
		return viewer{}
	}
	id := callerOf(ctx)
	return viewer{secure: true, id: id, operator: id != "" && slices.Contains(s.operators, id)}
}

// sees reports whether v may learn of rec; the caller holds the Server's mu.
func (v viewer) sees(rec *record, subjects *lru.Cache[string, string]) bool {
	switch {
	case !v.secure || v.operator:
		return true
	case v.id == "":
		return false
	}
	return rec.caller == v.id || slices.Contains(rec.hops(subjects), v.id)
}

// view returns rec's connection as v may see it, by ID; the caller holds the Server's mu.
// Without TLS, or when it holds no token v may not see, that is the record itself; otherwise a
// copy without the tokens of the hops other than v, which shares every other part with the
// record (read only, as events are).
func (v viewer) view(rec *record, subjects *lru.Cache[string, string]) map[string]*networkservice.Connection {
	conn := rec.conn
	if v.secure {
		hops := rec.hops(subjects)
		segs := conn.GetPath().GetPathSegments()
		var shown []*networkservice.PathSegment // nil while nothing is withheld
		for i, seg := range segs {
			if seg.GetToken() == "" || (hops[i] == v.id && v.id != "") {
				continue
			}
			if shown == nil {
				shown = slices.Clone(segs)
			}
			shown[i] = withoutToken(seg)
		}
		if shown != nil {
			conn = withSegments(conn, shown)
		}
	}
	return map[string]*networkservice.Connection{conn.GetId(): conn}
}

// withSegments returns a copy of conn whose path has segs, sharing every other field with conn:
// a deep proto.Clone per subscriber and event would copy the mechanism, context and labels for
// nothing. (TestViewCopiesEveryField fails when the API gains a field this misses.)
func withSegments(conn *networkservice.Connection, segs []*networkservice.PathSegment) *networkservice.Connection {
	var path *networkservice.Path
	if p := conn.GetPath(); p != nil {
		path = &networkservice.Path{Index: p.GetIndex(), PathSegments: segs}
	}
	return &networkservice.Connection{
		Id:                         conn.GetId(),
		NetworkService:             conn.GetNetworkService(),
		Mechanism:                  conn.GetMechanism(),
		Context:                    conn.GetContext(),
		Labels:                     conn.GetLabels(),
		Path:                       path,
		NetworkServiceEndpointName: conn.GetNetworkServiceEndpointName(),
		Payload:                    conn.GetPayload(),
		State:                      conn.GetState(),
	}
}

// withoutToken returns a copy of seg without its token, sharing its other fields.
func withoutToken(seg *networkservice.PathSegment) *networkservice.PathSegment {
	return &networkservice.PathSegment{Name: seg.GetName(), Id: seg.GetId(), Expires: seg.GetExpires(), Metrics: seg.GetMetrics()}
}
