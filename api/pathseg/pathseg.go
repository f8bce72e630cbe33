// Package pathseg finds a hop's own segment in a connection's path by the hop's name.
//
// NSM's API module finds only the current, previous and next segments, by index; a hop that
// comes back to a connection (a refresh, a heal, a restart) has to find its segment by name
// instead. Index looks, never changes the path, and is safe on a nil path.
package pathseg

import (
	"slices"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
)

// Index returns the index of the first segment of path named name, or -1 when there is none.
// A path that passes the same hop twice (out to another domain and back) gives the earlier
// segment.
func Index(path *networkservice.Path, name string) int {
	return slices.IndexFunc(path.GetPathSegments(), func(s *networkservice.PathSegment) bool {
		return s.GetName() == name
	})
}
