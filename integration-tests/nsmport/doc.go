// Package nsmport keeps MIGRATING.md true. testdata holds an endpoint (nse) and a client (nsc)
// written with NSM's sdk, in NSM's shape (configuration from NSM_* variables, a SPIFFE source,
// IPAM, an endpoint with options, serving, registration with refresh), and each ported to vwire
// (testdata/nsm and testdata/vwire). Its tests build and vet the ports in the workspace, count
// the lines each port changed beyond its imports (at most MaxChangedLines), and check that every
// one of those lines, before and after, is in MIGRATING.md; and they run the ports with
// identities from a real SPIRE agent (the programs of `make spire-bins`), the endpoint
// registered through cmd-nsmgr, the client connected to it. The NSM programs are not built:
// vwire never imports NSM's sdk.
package nsmport

// MaxChangedLines is how many lines beyond its imports a port may change: the promise
// for an NSM endpoint moving to vwire.
const MaxChangedLines = 30
