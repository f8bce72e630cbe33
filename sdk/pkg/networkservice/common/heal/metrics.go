package heal

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"vwire.dev/sdk/pkg/networkservice/common/metrics"
)

// Heal's measurements, to the process's MeterProvider (or WithMeterProvider's), by the
// connection's network service (nsm.network_service):
//
//	vwire.heal.starts    counter    {heal}  a connection began healing
//	vwire.heal.tries     counter    {try}   a try ended, by rpc.grpc.status_code (OK: healed by it)
//	vwire.heal.duration  histogram  s       from the start of healing to the Request that healed it, by vwire.heal.reselected
//
// They only record: what heal does does not depend on them.
type healMetrics struct {
	starts   metric.Int64Counter
	tries    metric.Int64Counter
	duration metric.Float64Histogram
}

// ReselectedKey says whether the connection was healed by reselecting its endpoint.
const ReselectedKey = attribute.Key("vwire.heal.reselected")

// WithMeterProvider records heal's metrics to p instead of the process's global provider.
func WithMeterProvider(p metric.MeterProvider) Option {
	return func(o *options) { o.provider = p }
}

// healBuckets span a heal, from a hop that answers at once to one waiting for a forwarder's
// successor or a new endpoint.
var healBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60}

func newHealMetrics(p metric.MeterProvider) *healMetrics {
	if p == nil {
		p = otel.GetMeterProvider()
	}
	m := p.Meter("vwire.dev/sdk/pkg/networkservice/common/heal")
	hm := &healMetrics{}
	var errs [3]error
	hm.starts, errs[0] = m.Int64Counter("vwire.heal.starts", metric.WithUnit("{heal}"),
		metric.WithDescription("Connections that began healing: the next hop reported them down, its stream was lost, or a liveness check failed"))
	hm.tries, errs[1] = m.Int64Counter("vwire.heal.tries", metric.WithUnit("{try}"),
		metric.WithDescription("Heal's tries, by the gRPC status code they ended with (OK: the try healed the connection)"))
	hm.duration, errs[2] = m.Float64Histogram("vwire.heal.duration", metric.WithUnit("s"),
		metric.WithDescription("From the start of healing to the Request that healed the connection"),
		metric.WithExplicitBucketBoundaries(healBuckets...))
	metrics.HandleErrors(errs[:]...)
	return hm
}

func (hm *healMetrics) started(ctx context.Context, service string) {
	if hm.starts.Enabled(ctx) {
		hm.starts.Add(ctx, 1, metric.WithAttributes(metrics.ServiceKey.String(service)))
	}
}

func (hm *healMetrics) tried(ctx context.Context, service string, err error) {
	if hm.tries.Enabled(ctx) {
		hm.tries.Add(ctx, 1, metric.WithAttributes(metrics.ServiceKey.String(service), metrics.Code(err)))
	}
}

func (hm *healMetrics) healed(ctx context.Context, service string, took time.Duration, reselected bool) {
	if hm.duration.Enabled(ctx) {
		hm.duration.Record(ctx, took.Seconds(), metric.WithAttributes(metrics.ServiceKey.String(service), ReselectedKey.Bool(reselected)))
	}
}
