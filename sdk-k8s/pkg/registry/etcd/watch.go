package etcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/tools/clock"
)

// watcher is one Find: what it sent, so that a resumed or relisted watch sends each change once.
type watcher[R next.Record] struct {
	store   *store[R]
	query   R
	observe func(obj *v1.Object[R], deleted bool) error
	sent    map[string]*v1.Object[R] // by name: the matching objects as last observed
}

// sendError is a failure of observe, which ends the watch.
type sendError struct{ error }

// get observes the matching records once.
func (w *watcher[R]) get(ctx context.Context) error {
	if name := w.query.GetName(); name != "" {
		obj, err := w.store.api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return w.store.apiError("find", name, err)
		}
		return w.update(obj)
	}
	_, err := w.list(ctx)
	return w.unwrap(err)
}

func (w *watcher[R]) unwrap(err error) error {
	var se sendError
	if errors.As(err, &se) {
		return se.error
	}
	return err
}

func (w *watcher[R]) listOptions() metav1.ListOptions {
	if name := w.query.GetName(); name != "" {
		return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
	}
	return metav1.ListOptions{}
}

// list observes what changed since the last list or watch (everything, the first time) and
// returns the resourceVersion to watch from.
func (w *watcher[R]) list(ctx context.Context) (string, error) {
	objs, err := w.store.api.List(ctx, w.listOptions())
	if err != nil {
		return "", w.store.apiError("find", w.query.GetName(), err)
	}
	slices.SortFunc(objs.Items, func(a, b v1.Object[R]) int { return cmp.Compare(a.Name, b.Name) })
	present := make(map[string]bool, len(objs.Items))
	for i := range objs.Items {
		present[objs.Items[i].Name] = true
		if err := w.update(&objs.Items[i]); err != nil {
			return "", err
		}
	}
	var gone []*v1.Object[R]
	for name, obj := range w.sent {
		if !present[name] {
			gone = append(gone, obj)
		}
	}
	slices.SortFunc(gone, func(a, b *v1.Object[R]) int { return cmp.Compare(a.Name, b.Name) })
	for _, obj := range gone {
		if err := w.remove(obj); err != nil {
			return "", err
		}
	}
	return objs.ResourceVersion, nil
}

// update observes obj if it matches and was not observed at this version; a record that no
// longer matches is observed as deleted.
func (w *watcher[R]) update(obj *v1.Object[R]) error {
	prev, had := w.sent[obj.Name]
	if !w.store.matches(w.query, obj.Record()) {
		if had {
			return w.remove(prev)
		}
		return nil
	}
	if had && prev.ResourceVersion == obj.ResourceVersion {
		return nil
	}
	w.sent[obj.Name] = obj
	if err := w.observe(obj, false); err != nil {
		return sendError{err}
	}
	return nil
}

// remove observes obj deleted if it was observed.
func (w *watcher[R]) remove(obj *v1.Object[R]) error {
	if _, had := w.sent[obj.Name]; !had {
		return nil
	}
	delete(w.sent, obj.Name)
	if err := w.observe(obj, true); err != nil {
		return sendError{err}
	}
	return nil
}

// run lists, then follows the API server's watch until ctx ends or observe fails.
func (w *watcher[R]) run(ctx context.Context) error {
	rv, err := w.list(ctx)
	if err != nil {
		return w.unwrap(err)
	}
	return w.follow(ctx, rv)
}

// follow follows the watch from resourceVersion rv, resuming and relisting as needed.
func (w *watcher[R]) follow(ctx context.Context, rv string) error {
	c := clock.FromContext(ctx)
	var down time.Time // since when the API server has not answered
	backoff := 50 * time.Millisecond
	for {
		next, err := w.watchOnce(ctx, rv)
		rv = next
		if ctx.Err() != nil {
			return nil
		}
		var se sendError
		if errors.As(err, &se) {
			return se.error
		}
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			// The API server has no history from rv: list again and send the difference.
			rv, err = w.list(ctx)
			if errors.As(err, &se) {
				return se.error
			}
		}
		if err == nil {
			down, backoff = time.Time{}, 50*time.Millisecond
			continue
		}
		if down.IsZero() {
			down = c.Now()
		}
		if c.Since(down) > w.store.reconnect {
			return status.Errorf(codes.Unavailable, "etcd: watch of %s in namespace %s: no answer from the API server for %s: %v; watch again",
				w.store.kind, w.store.namespace, w.store.reconnect, err)
		}
		if !sleep(ctx, c, backoff) {
			return nil
		}
		backoff = min(2*backoff, time.Second)
	}
}

// watchOnce follows one API watch from rv until it ends, and returns the last resourceVersion
// seen; nil when the API server ended it (its timeout, its shutdown).
func (w *watcher[R]) watchOnce(ctx context.Context, rv string) (string, error) {
	opts := w.listOptions()
	opts.ResourceVersion = rv
	opts.AllowWatchBookmarks = true
	timeout := int64(w.store.watchTimeout / time.Second)
	opts.TimeoutSeconds = &timeout
	events, err := w.store.api.Watch(ctx, opts)
	if err != nil {
		return rv, err
	}
	defer events.Stop()
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return rv, nil
		case ev, ok = <-events.ResultChan():
		}
		if !ok {
			return rv, nil
		}
		if ev.Type == watch.Error {
			return rv, apierrors.FromObject(ev.Object)
		}
		obj, isObj := ev.Object.(*v1.Object[R])
		if !isObj {
			return rv, fmt.Errorf("etcd: watch of %s sent a %T", w.store.kind, ev.Object)
		}
		switch ev.Type {
		case watch.Added, watch.Modified:
			err = w.update(obj)
		case watch.Deleted:
			err = w.remove(obj)
		}
		if err != nil {
			return rv, err
		}
		rv = obj.ResourceVersion // bookmarks carry only this
	}
}
