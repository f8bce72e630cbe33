// Package mtu lowers a connection's MTU to what a tunnel carries, for the tunnel mechanism
// elements: every vWire of the connection is made with the connection's MTU, so a packet that
// fits the client's interface fits the tunnel too.
package mtu

import "github.com/networkservicemesh/api/pkg/api/networkservice"

// Lower sets conn's MTU to mtu if it has none or a larger one.
func Lower(conn *networkservice.Connection, mtu uint32) {
	if conn.GetContext() == nil {
		conn.Context = &networkservice.ConnectionContext{}
	}
	if cur := conn.GetContext().GetMTU(); cur == 0 || cur > mtu {
		conn.Context.MTU = mtu
	}
}
