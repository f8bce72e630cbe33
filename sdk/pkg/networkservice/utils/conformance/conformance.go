// Package conformance holds the checks every NetworkService element passes, whatever its job:
// Request, refresh, Close (twice, and of a connection never seen), a failure in the next element,
// a cancelled context, time running far past every token's expiry; each leaving no goroutine
// behind. An element's own tests check what it does; these check that it behaves as a link of a
// chain. The list of elements checked is in conformance_test.go; a new element adds a line there.
package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

// Case is one element under test: how to make it and a request it accepts.
type Case struct {
	Name string
	// Server or Client makes a fresh element for ctx; ctx ends when the check does.
	Server func(ctx context.Context) networkservice.NetworkServiceServer
	Client func(ctx context.Context) networkservice.NetworkServiceClient
	// Request returns a request the element accepts.
	Request func() *networkservice.NetworkServiceRequest
	// Before lists elements the element needs ahead of it in a chain (after begin and metadata).
	Before []networkservice.NetworkServiceServer
}

// Run runs every check on c as a subtest.
func Run(t *testing.T, c Case) {
	t.Helper()
	checks := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"request, refresh, close", requestRefreshClose},
		{"next fails", nextFails},
		{"close unknown and twice", closeUnknownAndTwice},
		{"cancelled context", cancelledContext},
		{"time passes", timePasses},
	}
	for _, check := range checks {
		t.Run(c.Name+"/"+check.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			h := newHarness(t, c)
			check.run(t, h)
			h.stop()
		})
	}
}

// harness is the chain [begin, metadata, before..., element, failure injector, recorder].
type harness struct {
	c      Case
	ctx    context.Context
	stop   context.CancelFunc
	clock  *clock.Fake
	chain  networkservice.NetworkServiceServer
	fail   *inject.Errors
	record *checks.Recorder
}

func newHarness(t *testing.T, c Case) *harness {
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithCancel(clock.WithClock(context.Background(), fake))
	h := &harness{c: c, ctx: ctx, stop: cancel, clock: fake, fail: inject.NewServer(nil), record: checks.NewServer()}
	elems := []networkservice.NetworkServiceServer{}
	switch {
	case c.Server != nil:
		elems = append(elems, begin.NewServer(), metadata.NewServer())
		elems = append(elems, c.Before...)
		elems = append(elems, c.Server(ctx))
	case c.Client != nil:
		client := next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), c.Client(ctx))
		elems = append(elems, c.Before...)
		elems = append(elems, adapters.NewClientToServer(client))
	default:
		t.Fatalf("case %s has neither Server nor Client", c.Name)
	}
	h.chain = next.NewNetworkServiceServer(append(elems, h.fail, h.record)...)
	return h
}

func (h *harness) request(t *testing.T, req *networkservice.NetworkServiceRequest) *networkservice.Connection {
	t.Helper()
	conn, err := h.chain.Request(h.ctx, req)
	require.NoError(t, err)
	require.NotNil(t, conn)
	return conn
}

func (h *harness) close(t *testing.T, conn *networkservice.Connection) {
	t.Helper()
	_, err := h.chain.Close(h.ctx, conn)
	require.NoError(t, err)
}

func requestRefreshClose(t *testing.T, h *harness) {
	req := h.c.Request()
	conn := h.request(t, req)
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	conn = h.request(t, refresh)
	h.close(t, conn)
	require.Empty(t, h.record.Open(), "Close reached the end of the chain")
}

func nextFails(t *testing.T, h *harness) {
	h.fail.FailRequests(status.Error(codes.Unavailable, "next hop is down"))
	req := h.c.Request()
	_, err := h.chain.Request(h.ctx, req)
	require.Error(t, err)
	require.Equal(t, codes.Unavailable, status.Code(err), "the element keeps the next element's code: %v", err)

	h.fail.FailRequests(nil)
	conn := h.request(t, h.c.Request())
	h.fail.FailRequests(status.Error(codes.Unavailable, "next hop is down"))
	refresh := req.Clone()
	refresh.Connection = conn.Clone()
	_, err = h.chain.Request(h.ctx, refresh)
	require.Error(t, err, "a failed refresh is reported")
	h.fail.FailRequests(nil)
	h.close(t, conn)
}

func closeUnknownAndTwice(t *testing.T, h *harness) {
	h.close(t, h.c.Request().GetConnection())
	conn := h.request(t, h.c.Request())
	h.close(t, conn)
	h.close(t, conn)
}

func cancelledContext(t *testing.T, h *harness) {
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()
	conn, err := h.chain.Request(ctx, h.c.Request())
	if err != nil {
		code := status.Code(err)
		if code == codes.Unknown {
			code = status.FromContextError(err).Code()
		}
		require.Contains(t, []codes.Code{codes.Canceled, codes.Unavailable}, code, "a cancelled Request fails as cancelled, not with: %v", err)
		return
	}
	h.close(t, conn)
}

func timePasses(t *testing.T, h *harness) {
	conn := h.request(t, h.c.Request())
	h.clock.Advance(24 * time.Hour)
	h.close(t, conn)
}
