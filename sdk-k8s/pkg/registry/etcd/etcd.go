// Package etcd is a registry store kept in the Kubernetes API: each network service (NewNS) and
// network service endpoint (NewNSE) is a custom resource of NSM's kinds
// (apis/networkservicemesh.io/v1) in one namespace, so that every replica of the registry on
// that API server gives the same answers and the records outlive the registry. NSM calls its
// store of the same job etcd, after where the API server keeps them; it ends a registry chain
// in place of sdk's memory store and behaves as memory does.
//
// Register stores the record under its name, creating the object or replacing its spec (a
// JSON patch, so a refresh is one call and two replicas writing one name do not conflict: the
// last write wins, as in memory). Kubernetes names are DNS subdomains (lowercase letters, digits,
// '-' and '.', at most 253 characters); as in NSM the object is named as the record, and a
// record whose name is not one is refused with InvalidArgument, nothing stored. Unregister
// deletes the object with preconditions on its UID and resourceVersion, retrying on conflict;
// a name that is not stored (or cannot be) succeeds, as in memory. An Unregister of an
// endpoint whose expiration_time has passed leaves a stored endpoint whose expiration_time has
// not: that registration was renewed, through another replica, after the one expiring here.
//
// Find sends the stored records matching the query, sorted by name, with memory's matching
// (memory.MatchNS, memory.MatchNSE); a query by name reads that object only. With watch it
// lists, then follows the API server's watch from the list's resourceVersion (no polling):
// a watch that closes (the API server restarted, its timeout) resumes from the last
// resourceVersion it saw, and one the API server no longer has history for (410 Gone) lists
// again and sends only the difference (changed records, and Deleted for records gone), so a
// watcher loses nothing and gets nothing twice. A record that stops matching is sent as Deleted,
// as in memory. A watch that cannot reach the API server for WithReconnectTimeout ends with
// Unavailable (watching again resumes from the current state).
//
// NewNSE also expires endpoints itself, until its context ends: it watches every endpoint of the
// namespace and deletes each whose expiration_time has passed, with preconditions on the
// version it saw, so an endpoint refreshed meanwhile stays and replicas expiring the same one do
// not fight. This covers registrations that came through a replica that is gone, which sdk's
// expire element (a timer in the replica that took the Register) cannot.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// Option configures a store.
type Option func(*options)

type options struct {
	reconnect    time.Duration
	watchTimeout time.Duration
}

// WithReconnectTimeout sets how long a watch tries to reach the API server again before Find
// ends with Unavailable (default 1 minute).
func WithReconnectTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("etcd: WithReconnectTimeout needs a positive duration")
	}
	return func(o *options) { o.reconnect = d }
}

// WithWatchTimeout sets after how long the API server ends each watch, which then resumes
// (default 5 minutes): connections through load balancers are renewed before they go stale.
func WithWatchTimeout(d time.Duration) Option {
	if d < time.Second {
		panic("etcd: WithWatchTimeout needs at least a second")
	}
	return func(o *options) { o.watchTimeout = d }
}

// NewNS returns a store of network services in namespace.
func NewNS(client *v1.Client, namespace string, opts ...Option) next.NS {
	return newStore(client, namespace, schema[*registry.NetworkService]{match: memory.MatchNS}, opts)
}

// NewNSE returns a store of network service endpoints in namespace, which deletes the endpoints
// whose registration expired until ctx ends.
func NewNSE(ctx context.Context, client *v1.Client, namespace string, opts ...Option) next.NSE {
	s := newStore(client, namespace, schema[*registry.NetworkServiceEndpoint]{
		match:   memory.MatchNSE,
		expires: (*registry.NetworkServiceEndpoint).GetExpirationTime,
	}, opts)
	go s.expireAll(ctx)
	return s
}

// schema is what differs between the two records.
type schema[R next.Record] struct {
	match   func(query, r R) bool
	expires func(R) *timestamppb.Timestamp // nil: records do not expire
}

type store[R next.Record] struct {
	options
	schema    schema[R]
	api       v1.Interface[R]
	kind      string // for messages
	namespace string
}

func newStore[R next.Record](client *v1.Client, namespace string, s schema[R], opts []Option) *store[R] {
	if client == nil {
		panic("etcd: no client")
	}
	if namespace == "" {
		panic("etcd: no namespace")
	}
	o := options{reconnect: time.Minute, watchTimeout: 5 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	return &store[R]{options: o, schema: s, api: v1.For[R](client, namespace), kind: v1.Kind[R](), namespace: namespace}
}

// attempts bounds the retries of a change that raced another replica's change of the same name.
const attempts = 5

func (s *store[R]) Register(ctx context.Context, r R) (R, error) {
	var zero R
	name := r.GetName()
	if err := checkName(name); err != nil {
		return zero, status.Errorf(codes.InvalidArgument, "etcd: %s name %q cannot name a Kubernetes object: %v", s.kind, name, err)
	}
	spec, err := json.Marshal(r)
	if err != nil {
		return zero, status.Errorf(codes.Internal, "etcd: encode %s %q: %v", s.kind, name, err)
	}
	patch := []byte(`[{"op":"add","path":"/spec","value":` + string(spec) + `}]`)
	for range attempts {
		obj, err := s.api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
		if !apierrors.IsNotFound(err) {
			return s.stored(obj, "register", name, err)
		}
		obj, err = s.api.Create(ctx, v1.New(s.namespace, r), metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) { // else another replica created it since: patch that
			return s.stored(obj, "register", name, err)
		}
	}
	return zero, status.Errorf(codes.Aborted, "etcd: register %s %q: it was created and deleted %d times meanwhile; register again", s.kind, name, attempts)
}

func (s *store[R]) stored(obj *v1.Object[R], op, name string, err error) (R, error) {
	if err != nil {
		var zero R
		return zero, s.apiError(op, name, err)
	}
	return obj.Record(), nil
}

func (s *store[R]) Unregister(ctx context.Context, r R) error {
	name := r.GetName()
	if checkName(name) != nil {
		return nil // nothing can be stored under it
	}
	for range attempts {
		obj, err := s.api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return s.apiError("unregister", name, err)
		}
		if s.renewed(clock.FromContext(ctx).Now(), r, obj.Spec) {
			return nil
		}
		err = s.api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &obj.UID, ResourceVersion: &obj.ResourceVersion}})
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) { // else changed since we read it: look again
			return s.apiError("unregister", name, err)
		}
	}
	return status.Errorf(codes.Aborted, "etcd: unregister %s %q: it changed %d times while being deleted; unregister again", s.kind, name, attempts)
}

// renewed tells whether stored is a live registration, newer than the expired one leaving.
func (s *store[R]) renewed(now time.Time, leaving, stored R) bool {
	if s.schema.expires == nil {
		return false
	}
	was, is := s.schema.expires(leaving), s.schema.expires(stored)
	return was != nil && !was.AsTime().After(now) && is != nil && is.AsTime().After(now)
}

func (s *store[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	w := &watcher[R]{store: s, query: q.Record, sent: map[string]*v1.Object[R]{},
		observe: func(obj *v1.Object[R], deleted bool) error {
			return send(&next.Event[R]{Record: obj.Record(), Deleted: deleted})
		}}
	if q.Record.GetName() != "" && checkName(q.Record.GetName()) != nil {
		if q.Watch {
			<-ctx.Done() // nothing can ever be stored under that name
		}
		return nil
	}
	if !q.Watch {
		return w.get(ctx)
	}
	return w.run(ctx)
}

func (s *store[R]) matches(query, r R) bool {
	return (query.GetName() == "" || query.GetName() == r.GetName()) && s.schema.match(query, r)
}

// apiError is err of the API server as a gRPC status.
func (s *store[R]) apiError(op, name string, err error) error {
	code := codes.Unavailable
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		code = codes.InvalidArgument
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		code = codes.PermissionDenied
	case apierrors.IsNotFound(err): // the resource itself: the CRDs are not installed
		code = codes.FailedPrecondition
	}
	return status.Errorf(code, "etcd: %s %s %q in namespace %s: %v", op, s.kind, name, s.namespace, err)
}

// checkName says why name cannot name an object, or nil.
func checkName(name string) error {
	if problems := validation.IsDNS1123Subdomain(name); len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
