// Package sdkkernel is the root of vwire's Linux data plane module: the kernel objects a
// forwarder makes for a connection, built on vishvananda/netlink in network namespaces.
//
// A vWire reaches a workload as a veth pair (veth), its end configured from the connection's
// IPContext (ipconfig) in the namespace its netns URL names (nsfile). In the forwarder the other
// end is cross-connected (xconnect) with the other workload's vWire on the same node, or with a
// tunnel to another node: VXLAN (vxlan) or WireGuard (wireguard, wireguard-go where the kernel
// has no WireGuard). Each package makes its objects all or nothing, removes them again from the
// same inputs (also after a restart), and returns errors that carry a gRPC status code.
//
// The chain elements under pkg/kernel/networkservice make these objects per connection in a
// forwarder (mechanisms/kernel, mechanisms/vxlan, mechanisms/wireguard), join a connection's two
// ends (xconnect), and chains/forwarder composes them into vwire's kernel forwarder; ifname names
// what a forwarder makes and sweeps what a previous run left.
//
// The packages need root (CAP_NET_ADMIN) and Linux. Their tests make their own network
// namespaces and remove them, and skip when not run as root.
package sdkkernel
