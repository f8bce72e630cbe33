// Package kerr turns an error from a kernel call (netlink, ioctl, setns) into an error that
// carries a gRPC status code, so that a forwarder's chain can return it as it is.
//
// Why: netlink answers with a bare errno ("file exists", "invalid argument") that arrives at a
// client as codes.Unknown with no word about which object failed. Wrap names the operation and
// the object in front of the kernel's words and picks the code from the errno: EEXIST is
// AlreadyExists; ENOENT, ENODEV, ESRCH NotFound; EINVAL, ERANGE InvalidArgument (the kernel
// refused the values the connection carries), and EBADF too (a handle that is not open);
// EPERM, EACCES PermissionDenied; EOPNOTSUPP and friends FailedPrecondition (the kernel lacks
// the feature); EBUSY, EAGAIN Unavailable; anything else Internal.
//
// Guarantees: the result wraps err, so errors.Is(result, unix.EEXIST) still holds; an error that
// already carries a status code other than Unknown keeps it; Wrap(nil, ...) is nil.
package kerr

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed kernel operation, or input refused before the kernel saw it, with the gRPC
// code it maps to. Its text is plain (no "rpc error: code = ..."), so it reads well wrapped.
type Error struct {
	Code codes.Code
	Op   string // what was being done or what is wrong, e.g. `veth: add pair "vw..." / "nsm-1"`
	Err  error  // what the kernel (or the library in front of it) said; nil for New
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Op
	}
	return e.Op + ": " + e.Err.Error()
}

// Unwrap returns the kernel's error, so errors.Is(err, unix.EEXIST) works through the wrapper.
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus makes the error a gRPC status with its code, wrapped or not.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Error()) }

// Wrap names the operation (format, args) in front of err and gives it the code of its errno.
func Wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Code: Code(err), Op: fmt.Sprintf(format, args...), Err: err}
}

// New is an error with a given code that did not come from the kernel: input the kernel would
// refuse, or a state it cannot work with, found before asking it.
func New(code codes.Code, format string, args ...any) error {
	return &Error{Code: code, Op: fmt.Sprintf(format, args...)}
}

// Code is the gRPC code for err (see the package comment).
func Code(err error) codes.Code {
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return codes.NotFound
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.EADDRINUSE):
		return codes.AlreadyExists
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ESRCH),
		errors.Is(err, unix.EADDRNOTAVAIL):
		return codes.NotFound
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ERANGE), errors.Is(err, unix.EBADF), errors.Is(err, unix.ENETUNREACH),
		errors.Is(err, unix.EHOSTUNREACH):
		return codes.InvalidArgument
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return codes.PermissionDenied
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EAFNOSUPPORT),
		errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.ENETDOWN):
		return codes.FailedPrecondition
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EAGAIN):
		return codes.Unavailable
	}
	return codes.Internal
}

// Missing reports whether err says that the object is already gone: removal treats that as done.
func Missing(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}
