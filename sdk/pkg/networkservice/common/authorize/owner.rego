# Only the connection's owner refreshes it: once this hop has accepted a connection, a Request for
# it must come from a path whose first hop (the client, the sub of segment 0's token) is the one
# that made it. input.owner is that first hop's SPIFFE ID, "" while this hop does not know the
# connection.
#
# Only a hop that runs with an identity judges this. (Close is judged in Go, not by policy: see
# the package comment of authorize.)
package vwire.authorize.owner

deny contains sprintf("connection %s belongs to %s, not to %s", [input.path.path_segments[input.path.index].id, input.owner, first]) if {
	input.identity != ""
	input.owner != ""
	first := input.path.path_segments[0].claims.sub
	first != input.owner
}
