// Package chain builds a component from a list of elements: each element does one job and calls
// the next. It is next's linking plus, when trace.Enabled() at build time, a trace wrapper around
// every element; otherwise the elements run bare.
package chain

import (
	"github.com/networkservicemesh/api/pkg/api/networkservice"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/core/trace"
)

// NewNetworkServiceServer chains servers in order.
func NewNetworkServiceServer(servers ...networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	if trace.Enabled() {
		traced := make([]networkservice.NetworkServiceServer, len(servers))
		for i, s := range servers {
			traced[i] = trace.NewNetworkServiceServer(s)
		}
		servers = traced
	}
	return next.NewNetworkServiceServer(servers...)
}

// NewNetworkServiceClient chains clients in order.
func NewNetworkServiceClient(clients ...networkservice.NetworkServiceClient) networkservice.NetworkServiceClient {
	if trace.Enabled() {
		traced := make([]networkservice.NetworkServiceClient, len(clients))
		for i, c := range clients {
			traced[i] = trace.NewNetworkServiceClient(c)
		}
		clients = traced
	}
	return next.NewNetworkServiceClient(clients...)
}

// NewMonitorConnectionServer chains monitor servers in order.
func NewMonitorConnectionServer(servers ...networkservice.MonitorConnectionServer) networkservice.MonitorConnectionServer {
	return next.NewMonitorConnectionServer(servers...)
}
