// Package log carries a structured logger in the context, so that every line an element writes
// names the component, the element and the connection it is about.
//
// Levels belong to the logger a component builds at start; there is no global switch here.
package log

import (
	"context"
	"log/slog"
)

type loggerKey struct{}

// FromContext returns the logger stored in ctx, or slog.Default() if there is none.
func FromContext(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// WithLogger returns ctx carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// With returns ctx whose logger has args added to every line (slog key-value pairs).
func With(ctx context.Context, args ...any) context.Context {
	return WithLogger(ctx, FromContext(ctx).With(args...))
}
