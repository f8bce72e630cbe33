# Every hop before this one signed its token with the SVID its sub names, and the previous hop is
# the caller this hop sees in mutual TLS.
#
# Only a hop that runs with an identity judges this (input.identity, its own SPIFFE ID, is set):
# an insecure mesh has neither certificates nor signatures worth the name. The signatures are
# verified before evaluation, against the trust bundle and the x5c chain each token carries:
# input.path.path_segments[i].signer is the SPIFFE ID that signed the token of a segment before
# this hop ("" if none could be trusted, with the reason in unverified); input.peer.id is the
# SPIFFE ID of the caller's certificate ("" without TLS) and input.peer.certificate that
# certificate in PEM, for policies of one's own.
package vwire.authorize.signed

deny contains sprintf("this hop (%s) takes calls over mutual TLS only: the caller presented no certificate", [input.identity]) if {
	input.identity != ""
	input.peer.id == ""
}

deny contains "this hop's segment is the first of the path: no caller signed it" if {
	input.identity != ""
	input.path.index == 0
}

deny contains sprintf("segment %d (%s): the token cannot be trusted: %s", [i, seg.name, seg.unverified]) if {
	input.identity != ""
	some i, seg in input.path.path_segments
	i < input.path.index
	seg.signer == ""
}

deny contains sprintf("segment %d (%s): the token is signed by %s, not by the caller %s", [i, seg.name, seg.signer, input.peer.id]) if {
	input.identity != ""
	input.peer.id != ""
	i := input.path.index - 1
	seg := input.path.path_segments[i]
	seg.signer != ""
	seg.signer != input.peer.id
}
