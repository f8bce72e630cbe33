# The path names every hop, once: each segment has a name and an ID, no two segments share an
# ID, and the index is inside the path.
package vwire.authorize.path

deny contains sprintf("path index %d is outside the path of %d segments", [input.path.index, count(input.path.path_segments)]) if {
	input.path.index >= count(input.path.path_segments)
}

deny contains sprintf("segment %d has no name", [i]) if {
	some i, seg in input.path.path_segments
	seg.name == ""
}

deny contains sprintf("segment %d (%s) has no ID", [i, seg.name]) if {
	some i, seg in input.path.path_segments
	seg.id == ""
}

deny contains sprintf("segments %d (%s) and %d (%s) share the ID %q", [i, a.name, j, b.name, a.id]) if {
	ids := [seg.id | some seg in input.path.path_segments]
	count({id | some id in ids}) != count(ids) # cheap; the pairs below only when there is a repeat
	some i, a in input.path.path_segments
	some j, b in input.path.path_segments
	i < j
	a.id != ""
	a.id == b.id
}
