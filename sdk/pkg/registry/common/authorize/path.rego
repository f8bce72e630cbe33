# The path is one chain of callers: at least one, and each token is addressed (aud) to the caller
# after it, the hop that passed the registration on. A hop can so pass on only what was sent to
# itself, not a token it saw elsewhere.
package vwire.registry.path

deny contains "the call carries no path of callers" if {
	count(input.path.path_segments) == 0
}

deny contains sprintf("segment %d: the token of %s is addressed to %v, not to %s who passed it on", [i, object.get(seg.claims, "sub", "?"), audience(seg), input.path.path_segments[i + 1].signer]) if {
	some i, seg in input.path.path_segments
	i + 1 < count(input.path.path_segments)
	input.path.path_segments[i + 1].signer != ""
	not input.path.path_segments[i + 1].signer in audience(seg)
}

audience(seg) := [seg.claims.aud] if {
	is_string(seg.claims.aud)
} else := seg.claims.aud if {
	is_array(seg.claims.aud)
} else := []
