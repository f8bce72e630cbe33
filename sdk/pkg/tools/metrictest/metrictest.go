// Package metrictest gives tests of instrumented code an OpenTelemetry MeterProvider of their own
// and what it recorded as plain values, so that a test states exact counts in one map literal.
//
// Collect names each data point "name{key=value,...}" (attributes sorted, as OpenTelemetry
// encodes a set) and gives counters and up-down counters their value, histograms their count.
package metrictest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Provider returns a MeterProvider for WithMeterProvider options and the reader to Collect it
// with; the provider is shut down when the test ends.
func Provider(t testing.TB) (metric.MeterProvider, *sdkmetric.ManualReader) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	return provider, reader
}

// Collect returns every data point the reader holds now: "name{attributes}" -> value (a
// histogram's: its count). It fails the test on a kind of data it does not know.
func Collect(t testing.TB, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("metrictest: collect: %v", err)
	}
	got := map[string]int64{}
	key := func(name string, attrs attribute.Set) string {
		return name + "{" + attrs.Encoded(attribute.DefaultEncoder()) + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					got[key(m.Name, dp.Attributes)] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					got[key(m.Name, dp.Attributes)] = int64(dp.Count)
				}
			default:
				t.Fatalf("metrictest: %s holds %T, which Collect does not read", m.Name, m.Data)
			}
		}
	}
	return got
}
