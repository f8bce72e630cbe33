module vwire.dev/cmd-forwarder-kernel

go 1.26.8

replace vwire.dev/sdk => ../sdk

replace vwire.dev/sdk-kernel => ../sdk-kernel

replace vwire.dev/api => ../api

require (
	github.com/networkservicemesh/api v1.15.0-rc.1.0.20250625083423-2e0c8496e4e3 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260819154853-08b0e4226688 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	vwire.dev/api v0.0.0-00010101000000-000000000000 // indirect
	vwire.dev/sdk v0.0.0-00010101000000-000000000000 // indirect
	vwire.dev/sdk-kernel v0.0.0-00010101000000-000000000000 // indirect
)
