package log_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWithAddsAttributes(t *testing.T) {
	require.Same(t, slog.Default(), log.FromContext(context.Background()))

	var out bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&out, nil)))
	ctx = log.With(ctx, "conn", "c-1")
	log.FromContext(ctx).Info("up")
	require.Contains(t, out.String(), "conn=c-1")
	require.Contains(t, out.String(), "msg=up")
}
