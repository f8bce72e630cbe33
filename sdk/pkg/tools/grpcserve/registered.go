package grpcserve

import (
	"context"
	"errors"
)

// Registered is the life of a component that serves and is registered (an endpoint, a
// forwarder), from the moment Serve returned: it registers, serves until ctx ends (a signal) or
// serving fails, then unregisters before it stops serving, so that no client is sent to it
// after it stopped answering, and returns once serving has ended.
//
// errs is Serve's channel and stop ends the serving context given to Serve (which must outlive
// ctx). register is called once; the function it returns unregisters. A registration that fails
// stops serving and is the error, except when ctx ended meanwhile: the component was stopped
// while registering, nothing is registered, and Registered returns nil. Otherwise the error is
// what ended serving (if anything did) joined with the unregistration's.
func Registered(ctx context.Context, errs <-chan error, stop context.CancelFunc, register func() (unregister func() error, err error)) error {
	unregister, err := register()
	if err != nil {
		stop()
		for range errs {
			// Serving ends because the registration failed: that is the error to tell.
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	select {
	case <-ctx.Done():
	case err = <-errs: // serving failed: unregister, then tell
	}
	unregisterErr := unregister()
	stop()
	for e := range errs {
		err = errors.Join(err, e)
	}
	return errors.Join(err, unregisterErr)
}
