# Every caller on the path sent a token that is a JWT and has not expired.
#
# input.now is nanoseconds since the Unix epoch; each segment of input.path.path_segments is one
# caller, the registrant first and the caller of this registry last, with its token, the token's
# claims (null if it is not a JWT), and signer: the SPIFFE ID whose key signed the token, as its
# x5c chain and the trust bundle prove ("" if they do not, error saying why).
package vwire.registry.tokens

deny contains sprintf("segment %d: %s", [i, reason(seg)]) if {
	some i, seg in input.path.path_segments
	not alive(seg)
}

alive(seg) if {
	is_number(seg.claims.exp)
	seg.claims.exp * 1000000000 > input.now
}

reason(seg) := "no token" if {
	seg.token == ""
} else := "the token is not a JWT" if {
	not is_object(seg.claims)
} else := "the token has no exp claim" if {
	not is_number(object.get(seg.claims, "exp", null))
} else := sprintf("the token of %s expired at %s (now %s)", [object.get(seg.claims, "sub", "?"), time.format(round(seg.claims.exp * 1000000000)), time.format(input.now)])
