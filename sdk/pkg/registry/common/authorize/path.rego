# The path is one chain of callers: at least one, each token addressed (aud) to the caller after
# it, the hop that passed the registration on, and the last, the caller's own, to this registry
# (input.identity). A hop can so pass on only what was sent to itself, not a token it saw
# elsewhere, and a token sent to another registry or hop is worth nothing here.
package vwire.registry.path

deny contains "the call carries no path of callers" if {
	count(input.path.path_segments) == 0
}

deny contains sprintf("segment %d: the token of %s is addressed to %v, not to %s who passed it on", [i, object.get(seg.claims, "sub", "?"), audience(seg), next.signer]) if {
	some i, seg in input.path.path_segments
	next := input.path.path_segments[i + 1]
	next.signer != ""
	not next.signer in audience(seg)
}

deny contains sprintf("the caller's token is addressed to %v, not to this registry, %s", [audience(last), input.identity]) if {
	last := input.path.path_segments[count(input.path.path_segments) - 1]
	not input.identity in audience(last)
}

audience(seg) := [seg.claims.aud] if {
	is_string(seg.claims.aud)
} else := seg.claims.aud if {
	is_array(seg.claims.aud)
} else := []
