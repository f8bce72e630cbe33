package authorize

import (
	"math"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/open-policy-agent/opa/v1/ast"
)

// allowedByDefaults reports whether the default policies (tokens.rego and path.rego) surely let
// path through at now (ns since the Unix epoch). It answers true only where both policies allow:
// every segment has a name and an ID, no two share an ID, the index is inside the path, and every
// segment before the index has a token whose claims hold an integer exp after now (exp*10^9 >
// now, exactly) and an expires that is unset or after now. Anything else (a denial, or an exp
// that is not an integer an int64 holds in nanoseconds) is left to OPA, which decides and says
// why: the Rego files stay the definition, this only skips evaluating them for the paths they
// clearly allow, which are nearly all of them.
func (s *server) allowedByDefaults(now int64, path *networkservice.Path) bool {
	segs := path.GetPathSegments()
	index := int(path.GetIndex())
	if index >= len(segs) {
		return false
	}
	for i, seg := range segs {
		if seg.GetName() == "" || seg.GetId() == "" {
			return false
		}
		for _, before := range segs[:i] { // paths are a handful of hops: no map needed
			if before.GetId() == seg.GetId() {
				return false
			}
		}
		if i >= index {
			continue
		}
		if expires := nanos(seg.GetExpires()); expires != 0 && expires <= now {
			return false
		}
		exp, ok := expNanos(s.claimsOf(seg.GetToken()))
		if !ok || exp <= now {
			return false
		}
	}
	return true
}

var expKey = ast.InternedTerm("exp")

// expNanos returns the exp claim of claims in nanoseconds, if it is an integer whose nanoseconds
// an int64 holds.
func expNanos(claims *ast.Term) (int64, bool) {
	obj, ok := claims.Value.(ast.Object)
	if !ok {
		return 0, false
	}
	v := obj.Get(expKey)
	if v == nil {
		return 0, false
	}
	n, ok := v.Value.(ast.Number)
	if !ok {
		return 0, false
	}
	exp, ok := n.Int64()
	const perSecond = int64(time.Second)
	if !ok || exp > math.MaxInt64/perSecond || exp < math.MinInt64/perSecond {
		return 0, false
	}
	return exp * perSecond, true
}

// claimsCacheSize bounds how many tokens' claims a server keeps decoded: a hop sees the same
// tokens again and again (every connection from one hop within the same second, with a
// deterministic signature), and decoding one costs several microseconds. A token's claims never
// change, so a cached entry is as good as a fresh decoding (the policies still judge them, at
// the time of each Request).
const claimsCacheSize = 4096

// claimsOf returns the claims of tok (read only: terms are shared by evaluations), decoding it
// if the cache does not have them.
func (s *server) claimsOf(tok string) *ast.Term {
	if term, ok := s.claims.Get(tok); ok {
		return term
	}
	term := claims(tok)
	s.claims.Add(tok, term)
	return term
}
