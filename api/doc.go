// Package api is the root of vwire's API module: what NSM's own API module lacks, on top of it.
//
// vwire speaks NSM's v1 gRPC protocol with the types of NSM's Go module
// github.com/networkservicemesh/api, so NSE authors keep the types they know and vwire's parts
// talk to NSM's. That module declares the messages and services but nothing that says which
// values are good, and this module adds it: validation of requests and registrations (validate),
// the client URL (nsurl), name@domain names (interdomain) and lookup of a path segment by name
// (pathseg). It never re-declares a type of NSM's module.
//
// NSM's module is pinned at v1.15.0-rc.1.0.20250625083423-2e0c8496e4e3, the commit whose wire
// format the golden vectors in testdata/ were made with; the tests of this package decode and
// re-encode them byte for byte and compare every gRPC method with testdata/services.txt, so a
// change of the pin that changes the wire fails here first.
package api
