// Package clientinfo labels an endpoint's registration with where it runs, as NSM's registry
// clientinfo does: the labels of the NetworkService API's clientinfo (nodeName, podName,
// clusterName from NODE_NAME, POD_NAME and CLUSTER_NAME) go into the labels of each of its
// network services, so that a service's matches select endpoints by node or cluster.
//
// Guarantees: the environment is read once, when the element is made; a label the record has
// already is kept; the caller's record is left as it gave it (the labels go on a copy). Find and
// Unregister pass through.
//
// Place: in an endpoint's registry client chain (registry/chains/client's
// WithNSEAdditionalFunctionality), before the record is sent.
package clientinfo

import (
	"context"
	"os"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/protobuf/proto"

	nsclientinfo "vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/registry/core/next"
)

type nse = registry.NetworkServiceEndpoint

// NewNSE returns the element, reading the environment with os.Getenv (or, for tests and
// programs with the values elsewhere, with getenv's first element).
func NewNSE(getenv ...func(string) string) next.NSE {
	read := os.Getenv
	if len(getenv) > 0 && getenv[0] != nil {
		read = getenv[0]
	}
	return &element{labels: nsclientinfo.Labels(read)}
}

type element struct {
	labels map[string]string // read once; never written after NewNSE
}

func (e *element) Register(ctx context.Context, r *nse) (*nse, error) {
	if len(e.labels) > 0 && len(r.GetNetworkServiceNames()) > 0 {
		r = proto.Clone(r).(*nse)
		if r.NetworkServiceLabels == nil {
			r.NetworkServiceLabels = map[string]*registry.NetworkServiceLabels{}
		}
		for _, service := range r.GetNetworkServiceNames() {
			l := r.NetworkServiceLabels[service]
			if l == nil {
				l = &registry.NetworkServiceLabels{}
				r.NetworkServiceLabels[service] = l
			}
			if l.Labels == nil {
				l.Labels = map[string]string{}
			}
			for k, v := range e.labels {
				if _, ok := l.Labels[k]; !ok {
					l.Labels[k] = v
				}
			}
		}
	}
	return next.Of[*nse](ctx).Register(ctx, r)
}

func (e *element) Find(ctx context.Context, q *next.Query[*nse], send func(*next.Event[*nse]) error) error {
	return next.Of[*nse](ctx).Find(ctx, q, send)
}

func (e *element) Unregister(ctx context.Context, r *nse) error {
	return next.Of[*nse](ctx).Unregister(ctx, r)
}
