package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFakeFiresDueTimersOnly(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fake := clock.NewFake(start)
	ctx := clock.WithClock(context.Background(), fake)
	c := clock.FromContext(ctx)

	fired := make(chan string, 3)
	c.AfterFunc(time.Second, func() { fired <- "1s" })
	stopped := c.AfterFunc(2*time.Second, func() { fired <- "2s" })
	c.AfterFunc(time.Minute, func() { fired <- "1m" })
	require.Equal(t, 3, fake.Pending())

	require.True(t, stopped.Stop())
	require.False(t, stopped.Stop(), "a stopped timer cannot be stopped twice")

	fake.Advance(5 * time.Second)
	require.Equal(t, "1s", <-fired)
	require.Equal(t, 1, fake.Pending())
	require.Equal(t, 5*time.Second, c.Since(start))
	require.Equal(t, 55*time.Second, c.Until(start.Add(time.Minute)))

	fake.Advance(time.Minute)
	require.Equal(t, "1m", <-fired)
	require.Empty(t, fired)
}

func TestRealIsDefault(t *testing.T) {
	c := clock.FromContext(context.Background())
	require.IsType(t, clock.Real{}, c)
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
}
