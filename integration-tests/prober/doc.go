// Package prober tests deployments-k8s/examples/prober.sh, the script the heal examples use to
// measure a vWire's loss window while the mesh heals, without a cluster: its report is fed ping
// output recorded on this machine (testdata: a vWire that works, one whose veth was deleted and
// made again, one that never came back), and its stop and clean are tried on a real ping of the
// loopback.
// The heal examples rely on the script's exit code (0: the vWire came back; 1: it did not, or
// bad input; 2: usage) and on its one-line report, which the test logs of the examples show.
package prober
