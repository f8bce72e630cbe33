// Package clientinfo labels each connection with where the workload that handles it runs: its
// node, pod and cluster, read from the environment variables NODE_NAME, POD_NAME and
// CLUSTER_NAME (as the Kubernetes downward API sets them) into the labels nodeName, podName
// and clusterName, the keys NSM uses. Endpoint selection and policies can then match on them.
//
// Guarantees: the environment is read once, when the element is made; a variable that is unset
// or empty adds nothing; a label the connection already has is never overwritten, so the
// client's own values win over those of any hop after it. Close passes through.
//
// Place: the client in a workload's client chain, before the request is sent; the server in a
// server chain (an endpoint, an nsmgr) before the elements that select on labels.
package clientinfo

import (
	"context"
	"os"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

// The labels this element sets.
const (
	NodeNameLabel    = "nodeName"
	PodNameLabel     = "podName"
	ClusterNameLabel = "clusterName"
)

// sources maps each environment variable to the label it fills, in a fixed order.
var sources = [...]struct{ env, label string }{
	{"NODE_NAME", NodeNameLabel},
	{"POD_NAME", PodNameLabel},
	{"CLUSTER_NAME", ClusterNameLabel},
}

// Option configures the element.
type Option func(*options)

type options struct {
	getenv func(string) string
}

// WithGetenv sets how the environment is read (os.Getenv by default), for tests and for programs
// that take these values from elsewhere.
func WithGetenv(getenv func(string) string) Option {
	return func(o *options) { o.getenv = getenv }
}

// NewServer returns the element for a server chain.
func NewServer(opts ...Option) networkservice.NetworkServiceServer {
	o := options{getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if o.getenv == nil {
		panic("clientinfo: WithGetenv(nil)")
	}
	return &server{labels: Labels(o.getenv)}
}

// Labels reads the labels from getenv: those whose variable is set and not empty. The
// registry's clientinfo puts the same on an endpoint's registration.
func Labels(getenv func(string) string) map[string]string {
	labels := map[string]string{}
	for _, src := range sources {
		if v := getenv(src.env); v != "" {
			labels[src.label] = v
		}
	}
	return labels
}

// NewClient returns the element for a client chain.
func NewClient(opts ...Option) networkservice.NetworkServiceClient {
	return adapters.NewServerToClient(NewServer(opts...))
}

type server struct {
	labels map[string]string // read once; never written after NewServer
}

func (s *server) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if len(s.labels) > 0 {
		conn := req.GetConnection()
		if conn.GetLabels() == nil {
			conn.Labels = map[string]string{}
		}
		for k, v := range s.labels {
			if _, ok := conn.GetLabels()[k]; !ok {
				conn.Labels[k] = v
			}
		}
	}
	return next.Server(ctx).Request(ctx, req)
}

func (s *server) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}
