package metrictest_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/metrictest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCollectNamesPointsByAttributes(t *testing.T) {
	provider, reader := metrictest.Provider(t)
	m := provider.Meter("test")
	calls, err := m.Int64Counter("calls")
	require.NoError(t, err)
	live, err := m.Int64UpDownCounter("live")
	require.NoError(t, err)
	took, err := m.Float64Histogram("took")
	require.NoError(t, err)

	blue := metric.WithAttributes(attribute.String("service", "blue"), attribute.String("code", "OK"))
	calls.Add(t.Context(), 2, blue)
	calls.Add(t.Context(), 1, metric.WithAttributes(attribute.String("service", "green")))
	live.Add(t.Context(), 1)
	live.Add(t.Context(), -1)
	took.Record(t.Context(), 0.5, blue)
	took.Record(t.Context(), 1.5, blue)
	require.Equal(t, map[string]int64{
		"calls{code=OK,service=blue}": 2,
		"calls{service=green}":        1,
		"live{}":                      0,
		"took{code=OK,service=blue}":  2,
	}, metrictest.Collect(t, reader))
}
