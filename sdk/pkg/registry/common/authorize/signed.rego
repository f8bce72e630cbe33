# Every token on the path is signed by the SVID it names as its subject, and the last one, the
# caller's own, by the SVID the caller presented in mutual TLS (input.peer, its SPIFFE ID; ""
# without TLS). So the registrant, the subject of the first token, is who it claims to be.
package vwire.registry.signed

deny contains "the caller presented no SVID: the registry API needs mutual TLS" if {
	input.peer == ""
}

deny contains sprintf("segment %d: the token cannot be trusted: %s", [i, seg.error]) if {
	some i, seg in input.path.path_segments
	seg.signer == ""
}

deny contains sprintf("the caller's token is signed by %s, but the caller presented the SVID of %s", [last.signer, input.peer]) if {
	last := input.path.path_segments[count(input.path.path_segments) - 1]
	last.signer != ""
	input.peer != ""
	last.signer != input.peer
}
