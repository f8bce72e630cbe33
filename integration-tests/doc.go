// Package integrationtests runs vwire's examples as a user would, with the real binaries: the
// local mesh of deployments-k8s/local in network namespaces, every topology, traffic across each
// vWire, and a teardown that leaves nothing behind. The tests need root.
package integrationtests
