package next

import (
	"context"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
)

// traced runs a registry element in a span per call, as sdk/pkg/networkservice/core/trace does
// for NetworkService elements, with the same marks of where an error began. Chain wraps every
// element in one when trace.Enabled() at build time; it lives here, not in a package of its
// own, because it links elements as Chain does (Of, With), and Chain is the one builder.
type traced[R Record] struct {
	inner Element[R]
	name  string
}

func (t *traced[R]) Register(ctx context.Context, r R) (R, error) {
	st, ctx := t.start(ctx, "Register", r)
	out, err := t.inner.Register(ctx, r)
	st.End(err)
	return out, err
}

func (t *traced[R]) Find(ctx context.Context, q *Query[R], send func(*Event[R]) error) error {
	st, ctx := t.start(ctx, "Find", q.Record)
	err := t.inner.Find(ctx, q, send)
	st.End(err)
	return err
}

func (t *traced[R]) Unregister(ctx context.Context, r R) error {
	st, ctx := t.start(ctx, "Unregister", r)
	err := t.inner.Unregister(ctx, r)
	st.End(err)
	return err
}

// start begins the element's step and returns the context to call it with: the rest of the
// chain behind a tracedLink, which tells the step what came back.
func (t *traced[R]) start(ctx context.Context, op string, r R) (*trace.Step, context.Context) {
	st := trace.Start(ctx, t.name, op, r.GetName())
	return st, With[R](st.Ctx, &tracedLink[R]{step: st, after: Of[R](ctx)})
}

type tracedLink[R Record] struct {
	step  *trace.Step
	after Element[R]
}

func (l *tracedLink[R]) Register(ctx context.Context, r R) (R, error) {
	out, err := l.after.Register(ctx, r)
	l.step.PassedOn(err)
	return out, err
}

func (l *tracedLink[R]) Find(ctx context.Context, q *Query[R], send func(*Event[R]) error) error {
	err := l.after.Find(ctx, q, send)
	l.step.PassedOn(err)
	return err
}

func (l *tracedLink[R]) Unregister(ctx context.Context, r R) error {
	err := l.after.Unregister(ctx, r)
	l.step.PassedOn(err)
	return err
}
