// Package integrationtests runs vwire's examples as a user would, with the real binaries: the
// local mesh of deployments-k8s/local in network namespaces, every topology, traffic across each
// vWire, heal after a forwarder or an endpoint dies, and a teardown that leaves nothing behind;
// a chaos suite that restarts every process many times under probers and checks that no vWire
// is lost for good and nothing is left that no live connection owns (TestChaos,
// BenchmarkLossWindows); benchmarks of the time to a first ping and of TCP throughput per
// topology. They need root.
package integrationtests

// The suites of the examples of deployments-k8s, compiled from their READMEs into k8s/.
//go:generate go run ./mdtest/suitegen -examples ../deployments-k8s/examples -out k8s
