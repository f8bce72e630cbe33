package spiffe

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadAPI returns the Source of the SPIFFE Workload API at addr (unix:///path, as
// SPIFFE_ENDPOINT_SOCKET names it), once it has given the first SVID or ctx ended. The source
// follows the SVIDs and bundles the API sends, keeps the last ones while the API is away, and
// reconnects by itself; Close it when done.
func WorkloadAPI(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return nil, fmt.Errorf("spiffe: no SVID from the Workload API at %s (is the SPIRE agent running, and is this workload registered?): %w", addr, err)
	}
	return src, nil
}
