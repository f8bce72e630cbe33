// Package explain turns the error of a call to another component into a message for the person
// who runs the program: what failed, where, the gRPC code and message, and, when the other side
// did not answer within a limit the person set, that limit by the name they set it under and
// what to check. Programs (cmd-*) print these at exit; a gRPC error as it comes ("rpc error:
// code = Unavailable desc = ...") names neither the setting nor the fix.
//
// Guarantees: an *Error keeps the error it explains (errors.Is, errors.As and status.Code see
// through it, so a program still tells a stop from a failure); Describe never loses a message,
// an error without a gRPC status is told as it is.
package explain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limit is a time bound as the person who set it knows it: a duration and the setting it came
// from (NSM_REGISTER_TIMEOUT), empty when the program chose it.
type Limit struct {
	Setting string
	Value   time.Duration
}

func (l Limit) String() string {
	if l.Setting == "" {
		return l.Value.String()
	}
	return l.Setting + "=" + l.Value.String()
}

// Error is a failed call told for a person.
type Error struct {
	// What is the call and where it went: "register at unix:///var/lib/networkservicemesh/nsm.io.sock".
	What string
	// TimedOut says the other side did not answer within Limit.
	TimedOut bool
	Limit    Limit
	// Check is what to look at when the time ran out: "is the nsmgr running there?".
	Check string
	Err   error
}

func (e *Error) Error() string {
	if !e.TimedOut {
		return e.What + ": " + Describe(e.Err)
	}
	if e.Check == "" {
		return fmt.Sprintf("%s: no answer within %s: %s", e.What, e.Limit, Describe(e.Err))
	}
	return fmt.Sprintf("%s: no answer within %s; %s (%s)", e.What, e.Limit, e.Check, Describe(e.Err))
}

func (e *Error) Unwrap() error { return e.Err }

// Describe is the gRPC status err carries as "Code: message" (the message of the status, not of
// the wrappings around it, which name the program's own functions), or err as it is when it
// carries none.
func Describe(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		s := se.GRPCStatus()
		return s.Code().String() + ": " + s.Message()
	}
	return err.Error()
}

// NoAnswer reports whether err says the other side did not answer: Unavailable (not reached) or
// DeadlineExceeded (reached, no answer in time), as a status or as a context's error.
func NoAnswer(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}
