package kerr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWrap(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		missing bool
	}{
		{name: "exists", err: unix.EEXIST, code: codes.AlreadyExists},
		{name: "no such device", err: unix.ENODEV, code: codes.NotFound, missing: true},
		{name: "no such process (route)", err: unix.ESRCH, code: codes.NotFound, missing: true},
		{name: "address not there", err: unix.EADDRNOTAVAIL, code: codes.NotFound, missing: true},
		{name: "invalid", err: unix.EINVAL, code: codes.InvalidArgument},
		{name: "bad handle", err: unix.EBADF, code: codes.InvalidArgument},
		{name: "not permitted", err: unix.EPERM, code: codes.PermissionDenied},
		{name: "no kernel support", err: unix.EOPNOTSUPP, code: codes.FailedPrecondition},
		{name: "busy", err: unix.EBUSY, code: codes.Unavailable},
		{name: "wrapped errno", err: fmt.Errorf("netlink: %w", unix.EEXIST), code: codes.AlreadyExists},
		{name: "status kept", err: status.Error(codes.Unimplemented, "no"), code: codes.Unimplemented},
		{name: "anything else", err: errors.New("odd"), code: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := kerr.Wrap(tt.err, "veth: add %q", "nsm-1")
			require.Equal(t, tt.code, status.Code(err))
			require.Equal(t, tt.code, status.Code(fmt.Errorf("outer: %w", err)), "the code survives wrapping")
			require.ErrorIs(t, err, tt.err)
			require.Equal(t, `veth: add "nsm-1": `+tt.err.Error(), err.Error())
			require.Equal(t, tt.missing, kerr.Missing(err))
		})
	}
	ns, _ := nstest.New(t)
	_, notFound := nstest.Handle(t, ns).LinkByName("nsm-9")
	require.IsType(t, netlink.LinkNotFoundError{}, notFound)
	require.Equal(t, codes.NotFound, status.Code(kerr.Wrap(notFound, "find")))
	require.True(t, kerr.Missing(notFound))

	require.NoError(t, kerr.Wrap(nil, "nothing"))
	require.False(t, kerr.Missing(nil))
}

func TestNew(t *testing.T) {
	err := kerr.New(codes.InvalidArgument, "veth: MTU %d is outside 68..65535", 9)
	require.EqualError(t, err, "veth: MTU 9 is outside 68..65535", "plain text, no rpc error prefix")
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, "veth: MTU 9 is outside 68..65535", status.Convert(err).Message())
}
