package monitor

import (
	"context"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Snapshot returns the connections the MonitorConnection service behind cc shows its caller now,
// by ID: the INITIAL_STATE_TRANSFER of a stream that it then ends. It is for a program that looks
// once (an operator's tool, a client finding its predecessor's connections), not one that follows.
func Snapshot(ctx context.Context, cc grpc.ClientConnInterface, selector *networkservice.MonitorScopeSelector) (map[string]*networkservice.Connection, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream once the snapshot is read
	stream, err := networkservice.NewMonitorConnectionClient(cc).MonitorConnections(ctx, selector)
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if first.GetType() != networkservice.ConnectionEventType_INITIAL_STATE_TRANSFER {
		return nil, status.Errorf(codes.Internal, "MonitorConnections began with %s, not INITIAL_STATE_TRANSFER", first.GetType())
	}
	return first.GetConnections(), nil
}
