package explain_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/tools/explain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestError(t *testing.T) {
	refused := fmt.Errorf("client: register nse: %w", status.Error(codes.PermissionDenied, "not the owner of nse"))
	limit := explain.Limit{Setting: "NSM_REGISTER_TIMEOUT", Value: 15 * time.Second}
	for _, tc := range []struct {
		name string
		err  *explain.Error
		want string
	}{
		{"a refusal: the status, without the wrappings", &explain.Error{What: "register at unix:///nsm.sock", Limit: limit, Err: refused},
			"register at unix:///nsm.sock: PermissionDenied: not the owner of nse"},
		{"no answer, with what to check", &explain.Error{What: "register at unix:///nsm.sock", TimedOut: true, Limit: limit,
			Check: "is the nsmgr running there?", Err: status.Error(codes.Unavailable, "connection refused")},
			"register at unix:///nsm.sock: no answer within NSM_REGISTER_TIMEOUT=15s; is the nsmgr running there? (Unavailable: connection refused)"},
		{"no answer, a limit of the program's own", &explain.Error{What: "unregister at tcp://10.0.0.1:5001", TimedOut: true,
			Limit: explain.Limit{Value: time.Second}, Err: context.DeadlineExceeded},
			"unregister at tcp://10.0.0.1:5001: no answer within 1s: context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.EqualError(t, tc.err, tc.want)
		})
	}
	err := error(&explain.Error{What: "register", Err: refused})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the code is kept")
	require.ErrorIs(t, &explain.Error{What: "register", Err: fmt.Errorf("x: %w", context.Canceled)}, context.Canceled)
}

// TestARealCall: the error of a call to a socket nobody serves is no answer, told by its code
// and gRPC's message.
func TestARealCall(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	target := "unix://" + filepath.Join(dir, "nobody.sock")
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	_, err = grpc_health_v1.NewHealthClient(cc).Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
	require.True(t, explain.NoAnswer(err))
	require.Regexp(t, `^Unavailable: .*nobody.sock`, explain.Describe(err))

	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_, err = grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{}, grpc.WaitForReady(true))
	require.True(t, explain.NoAnswer(err), "waited for a server that never came: %v", err)
}

func TestNoAnswer(t *testing.T) {
	for err, want := range map[error]bool{
		status.Error(codes.Unavailable, "x"):          true,
		status.Error(codes.DeadlineExceeded, "x"):     true,
		fmt.Errorf("w: %w", context.DeadlineExceeded): true,
		status.Error(codes.PermissionDenied, "x"):     false,
		context.Canceled: false,
		errors.New("hopurl: listen on unix:///x: refused"): false,
	} {
		require.Equal(t, want, explain.NoAnswer(err), "%v", err)
	}
	require.Equal(t, "plain", explain.Describe(errors.New("plain")))
}
