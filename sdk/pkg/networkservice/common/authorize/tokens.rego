# Every hop before this one signed the connection with a token that is present, parses as a JWT
# and has not expired. Signatures are not checked here: that needs the mesh's trust bundle.
#
# input.now and input.path.path_segments[_].expires are nanoseconds since the Unix epoch
# (expires 0: not set); input.path.index is this hop's segment; the claims of each segment
# before it are its token's JWT payload, or null if the token is not a JWT.
package vwire.authorize.tokens

deny contains sprintf("segment %d (%s): %s", [i, seg.name, reason(seg)]) if {
	some i, seg in input.path.path_segments
	i < input.path.index
	not valid(seg)
}

valid(seg) if {
	exp := seg.claims.exp
	is_number(exp)
	exp * 1000000000 > input.now
	fresh(seg.expires)
}

fresh(expires) if expires == 0

fresh(expires) if expires > input.now

# reason says why valid(seg) failed; its last branch answers when the others cannot.
reason(seg) := "no token" if {
	seg.token == ""
} else := "the token is not a JWT" if {
	not is_object(seg.claims)
} else := "the token has no exp claim" if {
	# object.get: inside not, a builtin given an undefined ref is undefined, not false
	not is_number(object.get(seg.claims, "exp", null))
} else := sprintf("the token expired at %s (now %s)", [at(seg.claims.exp * 1000000000), at(input.now)]) if {
	seg.claims.exp * 1000000000 <= input.now
} else := sprintf("the segment expired at %s (now %s)", [at(seg.expires), at(input.now)]) if {
	not fresh(seg.expires)
} else := "the token is not valid"

at(ns) := time.format(ns) if {
	ns == round(ns)
} else := sprintf("%v ns", [ns])
