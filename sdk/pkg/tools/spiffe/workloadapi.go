package spiffe

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadAPI returns the Source of the SPIFFE Workload API at addr (unix:///path, as
// SPIFFE_ENDPOINT_SOCKET names it), once it has given the first SVID or ctx ended. The source
// follows the SVIDs and bundles the API sends, keeps the last ones while the API is away, and
// reconnects by itself; Close it when done.
func WorkloadAPI(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr),
		workloadapi.WithBackoffStrategy(retryEvery(workloadAPIRetry))))
	if err != nil {
		return nil, fmt.Errorf("spiffe: no SVID from the Workload API at %s (is the SPIRE agent running, and is this workload registered?): %w", addr, err)
	}
	return src, nil
}

// workloadAPIRetry is how long a source waits before asking an absent Workload API again.
// go-spiffe's default waits 1 s, then 2 s, 3 s... up to 30 s: a component started while its
// SPIRE agent restarts would get its SVID seconds after the agent is back. A local socket costs
// nothing to try five times a second.
const workloadAPIRetry = 200 * time.Millisecond

// retryEvery is a go-spiffe backoff strategy that always waits the same.
type retryEvery time.Duration

func (r retryEvery) NewBackoff() workloadapi.Backoff { return r }
func (r retryEvery) Next() time.Duration             { return time.Duration(r) }
func (retryEvery) Reset()                            {}
