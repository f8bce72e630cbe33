// Package interdomain splits and joins the name@domain names that reach another registry domain.
//
// NSM names a network service or endpoint of another domain by appending "@domain", and every
// element that routes between domains must cut and glue such names the same way; NSM's API
// module has no helpers for it. Split cuts at the last '@', so Join(Split(name)) gives name back
// for every string that does not end in '@', and a name without '@' is local (its domain is
// empty).
package interdomain

import "strings"

// Is reports whether name carries a domain.
func Is(name string) bool {
	return strings.Contains(name, "@")
}

// Split returns the part of name before its last '@' and the domain after it; a name without
// '@' is returned whole with an empty domain.
func Split(name string) (local, domain string) {
	i := strings.LastIndexByte(name, '@')
	if i < 0 {
		return name, ""
	}
	return name[:i], name[i+1:]
}

// Join is the inverse of Split: an empty domain leaves local as it is.
func Join(local, domain string) string {
	if domain == "" {
		return local
	}
	return local + "@" + domain
}
