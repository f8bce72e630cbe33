package etcd

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/log"
)

// expireAll deletes every endpoint of the namespace whose expiration_time passed, until ctx ends.
func (s *store[R]) expireAll(ctx context.Context) {
	x := &expiry[R]{store: s, ctx: ctx, timers: map[string]clock.Timer{}}
	defer x.stopAll()
	c := clock.FromContext(ctx)
	for {
		var zero R
		query := zero.ProtoReflect().Type().New().Interface().(R) // matches every record
		w := &watcher[R]{store: s, query: query, sent: map[string]*v1.Object[R]{}, observe: x.observe}
		err := w.run(ctx)
		if ctx.Err() != nil {
			return
		}
		log.FromContext(ctx).Warn("etcd: expiry: watching endpoints failed; watching again", "namespace", s.namespace, "error", err)
		if !sleep(ctx, c, retryExpiry) {
			return
		}
	}
}

// sleep waits d on c, or less if ctx ends first (false).
func sleep(ctx context.Context, c clock.Clock, d time.Duration) bool {
	wait := make(chan struct{})
	t := c.AfterFunc(d, func() { close(wait) })
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-wait:
		return true
	}
}

// expiry holds a timer for each stored endpoint, set to its expiration_time.
type expiry[R next.Record] struct {
	store  *store[R]
	ctx    context.Context
	mu     sync.Mutex
	timers map[string]clock.Timer
}

// retryExpiry is when a deletion that failed for another reason than a newer version is tried again.
const retryExpiry = time.Second

func (x *expiry[R]) observe(obj *v1.Object[R], deleted bool) error {
	if deleted {
		x.set(obj.Name, nil)
		return nil
	}
	exp := x.store.schema.expires(obj.Spec)
	if exp == nil {
		x.set(obj.Name, nil) // a record without expiration_time (written by hand) stays
		return nil
	}
	x.arm(obj.Name, obj.UID, obj.ResourceVersion, clock.FromContext(x.ctx).Until(exp.AsTime()))
	return nil
}

func (x *expiry[R]) arm(name string, uid types.UID, rv string, after time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var t clock.Timer
	t = clock.FromContext(x.ctx).AfterFunc(after, func() {
		err := x.store.api.Delete(x.ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case err == nil:
			log.FromContext(x.ctx).Info("etcd: expired endpoint deleted", "nse", name, "namespace", x.store.namespace)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err) || x.ctx.Err() != nil:
			// Gone, or changed since (refreshed): the watch brings the new version.
		default:
			log.FromContext(x.ctx).Warn("etcd: deleting an expired endpoint failed; trying again", "nse", name, "error", err)
			x.mu.Lock()
			current := x.timers[name] == t
			x.mu.Unlock()
			if current {
				x.arm(name, uid, rv, retryExpiry)
			}
		}
	})
	x.replace(name, t)
}

// set makes t the timer of name (nil: none).
func (x *expiry[R]) set(name string, t clock.Timer) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.replace(name, t)
}

// replace makes t the timer of name, stopping the one before; x.mu is held.
func (x *expiry[R]) replace(name string, t clock.Timer) {
	if old := x.timers[name]; old != nil {
		old.Stop()
	}
	if t == nil {
		delete(x.timers, name)
	} else {
		x.timers[name] = t
	}
}

func (x *expiry[R]) stopAll() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, t := range x.timers {
		t.Stop()
		delete(x.timers, name)
	}
}
