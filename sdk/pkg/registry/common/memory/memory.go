// Package memory is a registry store held in memory: it registers, finds and watches network
// services (NewNS) and network service endpoints (NewNSE), and ends a registry chain.
//
// Register stores a copy of the record, replacing the record of the same name, and returns the
// record. Unregister deletes the record of that name; deleting a name that is not there succeeds,
// so that a repeated Unregister, or one that races an expiry, is not an error. A record without a
// name is refused with InvalidArgument.
//
// Find sends copies of the stored records that match the query, sorted by name; a field left
// empty in the query matches anything:
//   - name: that record only, found by a map lookup;
//   - NSE network_service_names: endpoints offering any of the names, found through an index by
//     service name;
//   - NSE network_service_labels: for each service in the query, the query's labels are a subset
//     of the endpoint's labels for that service (an endpoint without labels for it does not match);
//   - NSE url: equal;
//   - NS payload: equal.
//
// With watch, Find first sends all current matches, then every later change until its context
// ends: a Register as the new record, an Unregister (expire's too) as the old record with
// Deleted, and a record that no longer matches the query after a Register as Deleted. Changes
// are put into each watcher's bounded queue under the store's lock, so every watcher sees them in
// the store's order and none is lost; a watcher that falls more than its queue behind is ended
// with ResourceExhausted (watching again gives it the current state) instead of holding up
// registrations. Callers get their own copies: nothing they change reaches the store.
//
// Memory is the last element of a chain: it does not call the rest.
package memory

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// Option configures a store.
type Option func(*options)

type options struct {
	queue    int
	provider metric.MeterProvider
}

// WithWatchQueue sets how many changes a watcher may fall behind before it is ended
// (default 1024).
func WithWatchQueue(n int) Option {
	if n < 1 {
		panic("memory: WithWatchQueue needs a queue of at least 1")
	}
	return func(o *options) { o.queue = n }
}

// WithMeterProvider reports the store's sizes to p instead of the process's global provider.
func WithMeterProvider(p metric.MeterProvider) Option {
	return func(o *options) { o.provider = p }
}

// NewNS returns a store of network services.
func NewNS(opts ...Option) next.NS {
	return newStore(schema[*registry.NetworkService]{match: MatchNS, kind: "ns"}, opts)
}

// NewNSE returns a store of network service endpoints.
func NewNSE(opts ...Option) next.NSE {
	return newStore(schema[*registry.NetworkServiceEndpoint]{
		match:    MatchNSE,
		services: (*registry.NetworkServiceEndpoint).GetNetworkServiceNames,
		kind:     "nse",
	}, opts)
}

// schema is what differs between the two records.
type schema[R next.Record] struct {
	// match tells whether r matches the query's fields other than the name.
	match func(query, r R) bool
	// services lists the keys a record is indexed by and a query looks up (nil: no index).
	services func(R) []string
	// kind names the records in metrics: ns or nse.
	kind string
}

type store[R next.Record] struct {
	schema schema[R]
	queue  int

	mu       sync.Mutex
	records  map[string]R                   // by name; stored records are never changed
	index    map[string]map[string]struct{} // service name -> names of the records offering it
	watchers map[*watcher[R]]struct{}
}

// watcher is one Find with watch.
type watcher[R next.Record] struct {
	query  R
	events chan *next.Event[R] // shares the stored records; Find sends copies
	behind chan struct{}       // closed when events overflowed
}

func newStore[R next.Record](s schema[R], opts []Option) *store[R] {
	o := options{queue: 1024, provider: otel.GetMeterProvider()}
	for _, opt := range opts {
		opt(&o)
	}
	st := &store[R]{
		schema:   s,
		queue:    o.queue,
		records:  map[string]R{},
		index:    map[string]map[string]struct{}{},
		watchers: map[*watcher[R]]struct{}{},
	}
	st.observe(o.provider)
	return st
}

// observe reports the store's sizes at each collection, read under its lock, so that nothing
// is counted on the way of a registration:
//
//	vwire.registry.services   up-down {service}   network services stored (an ns store)
//	vwire.registry.endpoints  up-down {endpoint}  endpoints stored, by nsm.network_service they offer (an nse store; forwarders under "forwarder")
//	vwire.registry.watches    up-down {watch}     Finds with watch running, by vwire.registry.record (ns, nse)
//
// Stores of one process add up. The callback holds the store weakly and is unregistered when
// the store is collected: a store has no Close, and a test makes many.
func (s *store[R]) observe(p metric.MeterProvider) {
	m := p.Meter("vwire.dev/sdk/pkg/registry/common/memory")
	kind := attribute.String("vwire.registry.record", s.schema.kind)
	watches, err := m.Int64ObservableUpDownCounter("vwire.registry.watches", metric.WithUnit("{watch}"),
		metric.WithDescription("Finds with watch running on the registry's store, by record kind"))
	metrics.HandleErrors(err)
	var size metric.Int64ObservableUpDownCounter
	if s.schema.services == nil {
		size, err = m.Int64ObservableUpDownCounter("vwire.registry.services", metric.WithUnit("{service}"),
			metric.WithDescription("Network services registered"))
	} else {
		size, err = m.Int64ObservableUpDownCounter("vwire.registry.endpoints", metric.WithUnit("{endpoint}"),
			metric.WithDescription("Endpoints registered, by network service (forwarders under forwarder)"))
	}
	metrics.HandleErrors(err)
	held := weak.Make(s)
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := held.Value()
		if s == nil {
			return nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		o.ObserveInt64(watches, int64(len(s.watchers)), metric.WithAttributes(kind))
		if s.schema.services == nil {
			o.ObserveInt64(size, int64(len(s.records)))
			return nil
		}
		for service, names := range s.index {
			o.ObserveInt64(size, int64(len(names)), metric.WithAttributes(metrics.ServiceKey.String(service)))
		}
		return nil
	}, watches, size)
	if err != nil {
		metrics.HandleErrors(err)
		return
	}
	runtime.AddCleanup(s, func(r metric.Registration) { metrics.HandleErrors(r.Unregister()) }, reg)
}

func (s *store[R]) Register(_ context.Context, r R) (R, error) {
	name := r.GetName()
	if name == "" {
		var zero R
		return zero, status.Error(codes.InvalidArgument, "memory: the record has no name; give it one")
	}
	stored := proto.Clone(r).(R)

	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.records[name]
	if had {
		s.unindex(old)
	}
	s.records[name] = stored
	s.indexRecord(stored)
	for w := range s.watchers {
		switch {
		case s.matches(w.query, stored):
			s.push(w, &next.Event[R]{Record: stored})
		case had && s.matches(w.query, old):
			s.push(w, &next.Event[R]{Record: old, Deleted: true})
		}
	}
	return r, nil
}

func (s *store[R]) Unregister(_ context.Context, r R) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.records[r.GetName()]
	if !had {
		return nil
	}
	delete(s.records, old.GetName())
	s.unindex(old)
	for w := range s.watchers {
		if s.matches(w.query, old) {
			s.push(w, &next.Event[R]{Record: old, Deleted: true})
		}
	}
	return nil
}

func (s *store[R]) Find(ctx context.Context, q *next.Query[R], send func(*next.Event[R]) error) error {
	if !q.Watch {
		s.mu.Lock()
		found := s.find(q.Record)
		s.mu.Unlock()
		return sendAll(found, send)
	}

	// The query is kept and read under the lock while the caller goes on: keep a copy.
	w := &watcher[R]{query: proto.Clone(q.Record).(R), events: make(chan *next.Event[R], s.queue), behind: make(chan struct{})}
	s.mu.Lock()
	found := s.find(w.query)
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()

	if err := sendAll(found, send); err != nil {
		return err
	}
	for {
		// An overflow is answered before the events still queued: they end in a gap anyway.
		select {
		case <-w.behind:
			return s.overflowed(w)
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.behind:
			return s.overflowed(w)
		case ev := <-w.events:
			if err := send(&next.Event[R]{Record: proto.Clone(ev.Record).(R), Deleted: ev.Deleted}); err != nil {
				return err
			}
		}
	}
}

func (s *store[R]) overflowed(w *watcher[R]) error {
	return status.Errorf(codes.ResourceExhausted,
		"memory: a watcher of {%v} fell %d changes behind and was ended; watch again to get the current state",
		strings.TrimSpace(prototext.Format(w.query)), s.queue)
}

func sendAll[R next.Record](found []R, send func(*next.Event[R]) error) error {
	for _, r := range found {
		if err := send(&next.Event[R]{Record: proto.Clone(r).(R)}); err != nil {
			return err
		}
	}
	return nil
}

// find returns the stored records matching query, sorted by name; s.mu is held.
func (s *store[R]) find(query R) []R {
	if name := query.GetName(); name != "" {
		if r, ok := s.records[name]; ok && s.schema.match(query, r) {
			return []R{r}
		}
		return nil
	}
	var found []R
	if keys := s.keys(query); len(keys) > 0 {
		seen := map[string]struct{}{}
		for _, key := range keys {
			for name := range s.index[key] {
				if _, dup := seen[name]; dup {
					continue
				}
				seen[name] = struct{}{}
				if r := s.records[name]; s.schema.match(query, r) {
					found = append(found, r)
				}
			}
		}
	} else {
		for _, r := range s.records {
			if s.schema.match(query, r) {
				found = append(found, r)
			}
		}
	}
	slices.SortFunc(found, func(a, b R) int { return strings.Compare(a.GetName(), b.GetName()) })
	return found
}

func (s *store[R]) matches(query, r R) bool {
	return (query.GetName() == "" || query.GetName() == r.GetName()) && s.schema.match(query, r)
}

func (s *store[R]) keys(r R) []string {
	if s.schema.services == nil {
		return nil
	}
	return s.schema.services(r)
}

func (s *store[R]) indexRecord(r R) {
	for _, key := range s.keys(r) {
		names, ok := s.index[key]
		if !ok {
			names = map[string]struct{}{}
			s.index[key] = names
		}
		names[r.GetName()] = struct{}{}
	}
}

func (s *store[R]) unindex(r R) {
	for _, key := range s.keys(r) {
		delete(s.index[key], r.GetName())
		if len(s.index[key]) == 0 {
			delete(s.index, key)
		}
	}
}

// push queues ev for w, or ends w if its queue is full; s.mu is held.
func (s *store[R]) push(w *watcher[R], ev *next.Event[R]) {
	select {
	case w.events <- ev:
	default:
		close(w.behind)
		delete(s.watchers, w)
	}
}

// MatchNS tells whether ns matches the query's fields other than the name, as Find matches them;
// exported for the other stores, so that every backend finds alike.
func MatchNS(query, ns *registry.NetworkService) bool {
	return query.GetPayload() == "" || query.GetPayload() == ns.GetPayload()
}

// MatchNSE tells whether nse matches the query's fields other than the name, as Find matches
// them; exported for the other stores, so that every backend finds alike.
func MatchNSE(query, nse *registry.NetworkServiceEndpoint) bool {
	if names := query.GetNetworkServiceNames(); len(names) > 0 &&
		!slices.ContainsFunc(names, func(n string) bool { return slices.Contains(nse.GetNetworkServiceNames(), n) }) {
		return false
	}
	for service, want := range query.GetNetworkServiceLabels() {
		have, ok := nse.GetNetworkServiceLabels()[service]
		if !ok {
			return false
		}
		for k, v := range want.GetLabels() {
			if got, ok := have.GetLabels()[k]; !ok || got != v {
				return false
			}
		}
	}
	return query.GetUrl() == "" || query.GetUrl() == nse.GetUrl()
}
