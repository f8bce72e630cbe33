package onidle_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/onidle"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// step is one thing that happens to the endpoint, and what notify's count is after it.
type step struct {
	do    string // request, close, fail (the rest of the chain fails from now), heal, advance, cancel
	id    string
	d     time.Duration
	code  codes.Code // of a request
	calls int32
	armed bool // whether the idle timer runs after the step
}

func request(id string, code codes.Code, calls int32) step {
	return step{do: "request", id: id, code: code, calls: calls}
}

func closing(id string, calls int32) step {
	return step{do: "close", id: id, calls: calls, armed: false}
}

func advance(d time.Duration, calls int32, armed bool) step {
	return step{do: "advance", d: d, calls: calls, armed: armed}
}

func TestOnIdle(t *testing.T) {
	const minute = time.Minute
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		steps   []step
	}{
		{"idle from the start, notified once", minute, []step{
			advance(minute-time.Second, 0, true),
			advance(time.Second, 1, false),
			advance(time.Hour, 1, false),
		}},
		{"a connection holds it off; a refresh is not a second one; Close restarts the full time", minute, []step{
			advance(30*time.Second, 0, true),
			request("a", codes.OK, 0),
			advance(2*minute, 0, false),
			request("a", codes.OK, 0),
			request("a", codes.OK, 0),
			{do: "close", id: "a", armed: true},
			advance(minute-time.Second, 0, true),
			advance(time.Second, 1, false),
		}},
		{"idle only once every connection is gone", minute, []step{
			request("a", codes.OK, 0),
			request("b", codes.OK, 0),
			closing("a", 0),
			advance(2*minute, 0, false),
			{do: "close", id: "b", armed: true},
			advance(minute, 1, false),
		}},
		{"a first Request that fails leaves no count and restarts the time", minute, []step{
			advance(30*time.Second, 0, true),
			{do: "fail"},
			request("a", codes.Internal, 0),
			advance(minute-time.Second, 0, true),
			advance(time.Second, 1, false),
		}},
		{"a failed refresh keeps the connection counted", minute, []step{
			request("a", codes.OK, 0),
			{do: "fail"},
			request("a", codes.Internal, 0),
			{do: "heal"},
			advance(2*minute, 0, false),
			{do: "close", id: "a", armed: true},
			advance(minute, 1, false),
		}},
		{"a Close of an unknown connection changes nothing", minute, []step{
			advance(30*time.Second, 0, true),
			{do: "close", id: "x", armed: true},
			advance(30*time.Second, 1, false),
		}},
		{"a retired endpoint refuses new connections", minute, []step{
			advance(minute, 1, false),
			request("a", codes.Unavailable, 1),
			{do: "close", id: "a", calls: 1},
			advance(time.Hour, 1, false),
		}},
		{"ctx done stops the timer for good", minute, []step{
			advance(30*time.Second, 0, true),
			{do: "cancel"},
			advance(time.Hour, 0, false),
			request("a", codes.OK, 0),
			closing("a", 0),
			advance(time.Hour, 0, false),
		}},
		{"a timeout of zero never retires", 0, []step{
			advance(time.Hour, 0, false),
			request("a", codes.OK, 0),
			closing("a", 0),
			advance(time.Hour, 0, false),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := clock.NewFake(time.Now())
				ctx, cancel := context.WithCancel(clock.WithClock(context.Background(), fake))
				defer cancel()
				var calls atomic.Int32
				fail := inject.NewServer(nil)
				s := chain.NewNetworkServiceServer(metadata.NewServer(), onidle.NewServer(ctx, func() { calls.Add(1) }, onidle.WithTimeout(tc.timeout)), fail)

				for i, st := range tc.steps {
					switch st.do {
					case "request":
						_, err := s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: st.id}})
						require.Equal(t, st.code, status.Code(err), "step %d: %v", i, err)
						if st.code == codes.Unavailable {
							require.ErrorContains(t, err, "retired after 1m0s without connections")
						}
						if st.code == codes.OK {
							require.Zero(t, fake.Pending(), "step %d: a connection stops the timer", i)
						}
					case "close":
						_, err := s.Close(context.Background(), &networkservice.Connection{Id: st.id})
						require.NoError(t, err, "step %d", i)
					case "fail":
						fail.FailRequests(status.Error(codes.Internal, "boom"))
					case "heal":
						fail.FailRequests(nil)
					case "advance":
						fake.Advance(st.d)
					case "cancel":
						cancel()
					}
					synctest.Wait()
					require.Equal(t, st.calls, calls.Load(), "step %d (%s): notify calls", i, st.do)
					if st.do == "advance" || st.do == "close" {
						require.Equal(t, st.armed, fake.Pending() == 1, "step %d (%s): timer running", i, st.do)
					}
				}
			})
		})
	}
}

func TestNewServerPanicsWithoutNotify(t *testing.T) {
	require.PanicsWithValue(t, "onidle: NewServer: notify is nil", func() {
		onidle.NewServer(context.Background(), nil)
	})
}

func TestDefaultTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := clock.NewFake(time.Now())
		ctx, cancel := context.WithCancel(clock.WithClock(context.Background(), fake))
		defer cancel()
		done := make(chan struct{})
		onidle.NewServer(ctx, func() { close(done) })
		fake.Advance(onidle.DefaultTimeout - time.Nanosecond)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal(errors.New("notified early"))
		default:
		}
		fake.Advance(time.Nanosecond)
		<-done
	})
}
