# Each hop's token is addressed to the hop after it: the aud claim of a segment's token names the
# sub of the next segment's token, and the previous hop's names this hop (input.identity). So no
# hop's token can be taken to another place of the path, or into another path, than the one its
# signer sent it to.
#
# Only a hop that runs with an identity judges this: insecure tokens name no audience.
package vwire.authorize.chained

deny contains sprintf("segment %d (%s): the token is addressed to %v, not to the next hop %s", [i, seg.name, audience(seg.claims), next]) if {
	input.identity != ""
	some i, seg in input.path.path_segments
	i < input.path.index
	next := next_hop(i)
	not next in audience(seg.claims)
}

next_hop(i) := input.identity if {
	i == input.path.index - 1
} else := input.path.path_segments[i + 1].claims.sub

# audience is the set of names in an aud claim, which JWT allows as one string or a list.
audience(claims) := {claims.aud} if {
	is_string(claims.aud)
} else := {aud | some aud in claims.aud; is_string(aud)} if {
	is_array(claims.aud)
} else := set()
