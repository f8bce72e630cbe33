package main

// The client's list of services may change while it runs: NSM_NETWORK_SERVICES_FILE names a
// file, in NSM_NETWORK_SERVICES's form, that replaces that variable. The client reads it again at
// SIGHUP and whenever its contents change (it looks every followEvery), and makes only the
// difference: it closes the connections of the URLs gone and requests those new. A connection
// whose URL stayed is not touched at all: no Request, so its vWire and its traffic go on as they
// were. On Kubernetes the admission webhook mounts the pod's annotation as that file (a
// downward-API volume), which the kubelet rewrites when the annotation changes.
//
// A list that cannot be read or is not valid is logged at ERROR and changes nothing; the client
// goes on with what it has. A new service whose Request fails is logged at ERROR too; the others
// are made all the same, and the client asks for it again on its own, after a wait that starts at
// retryFirst and doubles after each failure up to retryMost: on Kubernetes nobody may ever change
// the list again to ask for it. SIGHUP, or a change of the list, asks at once and starts the waits
// anew.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"

	"vwire.dev/api/nsurl"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/explain"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/telemetry"
)

// followEvery is how often the client looks at NSM_NETWORK_SERVICES_FILE. The kubelet replaces a
// downward-API file by a rename, so each look sees the old contents or the new, never a mix.
const followEvery = time.Second

// retryFirst and retryMost bound the wait before the client asks again for the services of its
// list that have no connection. The waits are met on followEvery's beat.
const (
	retryFirst = time.Second
	retryMost  = 30 * time.Second
)

// servicesFromFile reads the list of NSM_NETWORK_SERVICES_FILE. seen is what it found there:
// the contents, or why there are none, so that a follower can tell a change.
func servicesFromFile(path string) (s serviceURLs, seen string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err.Error(), fmt.Errorf("NSM_NETWORK_SERVICES_FILE: %w", err)
	}
	if err := s.Decode(string(b)); err != nil {
		return nil, string(b), fmt.Errorf("NSM_NETWORK_SERVICES_FILE: %s: %q: %w", path, strings.TrimSpace(string(b)), err)
	}
	return s, string(b), nil
}

// services returns the list the client asks for at start: the file's when
// NSM_NETWORK_SERVICES_FILE is set (and what the file held), NSM_NETWORK_SERVICES otherwise.
func (c *config) services() (s serviceURLs, seen string, err error) {
	if c.NetworkServicesFile != "" {
		return servicesFromFile(c.NetworkServicesFile)
	}
	if c.NetworkServices == nil {
		return nil, "", &envconfig.Error{Var: "NSM_NETWORK_SERVICES", Unset: true,
			Problem: "not set, nor NSM_NETWORK_SERVICES_FILE; set one: the network services to ask for, as client URLs, e.g. kernel://icmp-responder/nsm-1"}
	}
	return c.NetworkServices, "", nil
}

// diff returns the URLs of have that want has not, to close, and those of want that have has
// not, to request, each in its list's order. URLs are compared in canonical form, interface
// name included: a URL that names no interface is named by its position, so a service before it
// that goes renames it, and its vWire is made again under the new name.
func diff(have, want serviceURLs) (gone, added serviceURLs) {
	inHave, inWant := contains(have), contains(want)
	for _, u := range have {
		if !inWant(u) {
			gone = append(gone, u)
		}
	}
	for _, u := range want {
		if !inHave(u) {
			added = append(added, u)
		}
	}
	return gone, added
}

// contains reports whether a URL is one of list, in canonical form.
func contains(list serviceURLs) func(*nsurl.URL) bool {
	keys := map[string]bool{}
	for _, u := range list {
		keys[u.String()] = true
	}
	return func(u *nsurl.URL) bool { return keys[u.String()] }
}

// vwire is one service the client holds, and its connection.
type vwire struct {
	url  *nsurl.URL
	conn *networkservice.Connection
}

// session is the client's connections, in the order they were made, and the list it is to hold.
type session struct {
	c    *config
	nsc  networkservice.NetworkServiceClient
	open []vwire
	want serviceURLs
	// After a failed Request, the services of want without a connection are asked for again at
	// retryAt; wait is the last wait, doubled at each failure, zero after a change of the list.
	wait    time.Duration
	retryAt time.Time
}

// urls are the services the session holds.
func (s *session) urls() serviceURLs {
	out := make(serviceURLs, len(s.open))
	for i, v := range s.open {
		out[i] = v.url
	}
	return out
}

// request asks for u and keeps its connection. The Request ends with ctx, or after
// NSM_REQUEST_TIMEOUT.
func (s *session) request(ctx context.Context, u *nsurl.URL) error {
	requesting, cancel := context.WithTimeout(ctx, s.c.RequestTimeout)
	requesting, traced := telemetry.StartTrace(requesting, "requesting", "service", u.String()) // logs the trace ID, when traces are exported
	conn, err := s.nsc.Request(requesting, request(u, s.c.Labels))
	traced(err)
	timedOut := errors.Is(requesting.Err(), context.DeadlineExceeded) // not the end of ctx, a signal
	cancel()
	if err != nil {
		return &explain.Error{What: fmt.Sprintf("request %s through %s", u, s.c.ConnectTo), TimedOut: timedOut,
			Limit: explain.Limit{Setting: "NSM_REQUEST_TIMEOUT", Value: s.c.RequestTimeout}, Err: err}
	}
	s.open = append(s.open, vwire{url: u, conn: conn})
	ipc := conn.GetContext().GetIpContext()
	log.FromContext(ctx).Info("connected", "service", u.String(), "interface", u.Interface,
		"src", ipc.GetSrcIpAddrs(), "dst", ipc.GetDstIpAddrs(),
		"endpoint", conn.GetNetworkServiceEndpointName(), "id", conn.GetId())
	return nil
}

// close closes the connections of the services of which, and forgets them even when the Close
// fails (the nsmgr then closes them after its NSM_ORPHAN_GRACE). Each Close outlives ctx, as the
// client's last ones do at exit, bounded by NSM_REQUEST_TIMEOUT.
func (s *session) close(ctx context.Context, which func(*nsurl.URL) bool) error {
	var errs error
	s.open = slices.DeleteFunc(s.open, func(v vwire) bool {
		if !which(v.url) {
			return false
		}
		closing, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.c.RequestTimeout)
		_, err := s.nsc.Close(closing, v.conn)
		cancel()
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("close %s: %w", v.url, err))
		} else {
			log.FromContext(ctx).Info("closed", "service", v.url.String(), "id", v.conn.GetId())
		}
		return true
	})
	return errs
}

// closeAll closes every connection.
func (s *session) closeAll(ctx context.Context) error {
	return s.close(ctx, func(*nsurl.URL) bool { return true })
}

// reload makes the session hold want: it closes the connections of the services gone first, so
// that a URL that changed can take its interface name again, then requests the new ones. Errors
// are logged; the services that could not be made are asked for again by retry. now is the time
// of the tick or signal that brought want.
func (s *session) reload(ctx context.Context, want serviceURLs, now time.Time) {
	logger := log.FromContext(ctx)
	s.want, s.wait = want, 0
	gone, added := diff(s.urls(), want)
	if len(gone) == 0 && len(added) == 0 {
		logger.Info("services unchanged", "services", want.String())
		return
	}
	logger.Info("services changed", "closing", gone.String(), "requesting", added.String())
	if err := s.close(ctx, contains(gone)); err != nil {
		logger.Error("could not close a connection; the nsmgr closes it after its NSM_ORPHAN_GRACE", "error", err)
	}
	s.connect(ctx, added, now)
}

// retry asks again for the services of the list that have no connection, at the tick of now if
// it is the one nearest the end of their wait: ticks come on followEvery's beat give or take a
// little, so a wait of n beats would otherwise often end just after the nth.
func (s *session) retry(ctx context.Context, now time.Time) {
	_, missing := diff(s.urls(), s.want)
	if len(missing) == 0 || now.Before(s.retryAt.Add(-followEvery/2)) {
		return
	}
	s.connect(ctx, missing, now)
}

// nextWait is the wait after a failure that came after a wait of last (zero: none since the list
// changed).
func nextWait(last time.Duration) time.Duration {
	return min(max(2*last, retryFirst), retryMost)
}

// connect requests each of which, once its interface name is free (or held by a vWire a previous
// run left, which it removes). When some fail, the services without a connection wait the next
// wait from now; each failure is logged once, with that wait: one line per service and wait.
func (s *session) connect(ctx context.Context, which serviceURLs, now time.Time) {
	wait := nextWait(s.wait)
	failed := false
	for _, u := range which {
		err := removeLeftovers(ctx, serviceURLs{u}) // its error says the name is taken
		if err == nil {
			err = s.request(ctx, u)
		}
		if err != nil {
			failed = true
			log.FromContext(ctx).Error("could not request a service of the list; asking again after the wait, at SIGHUP or at the next change of the list",
				"service", u.String(), "wait", wait, "error", err)
		}
	}
	if failed {
		s.wait, s.retryAt = wait, now.Add(wait)
	}
}

// follow reloads the list at each SIGHUP (hup) and, with NSM_NETWORK_SERVICES_FILE, when what
// the file holds changes, until ctx ends. seen is what the file held when the session was made.
func (s *session) follow(ctx context.Context, hup <-chan os.Signal, seen string) {
	logger := log.FromContext(ctx)
	file := s.c.NetworkServicesFile
	var tick <-chan time.Time
	if file != "" {
		ticker := time.NewTicker(followEvery)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		hangup := false
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if file == "" {
				logger.Warn("SIGHUP: nothing to read again: NSM_NETWORK_SERVICES_FILE is not set, and NSM_NETWORK_SERVICES cannot change in a running process")
				continue
			}
			logger.Info("SIGHUP: reading the list of services again", "file", file)
			hangup = true
			now = time.Now()
		case now = <-tick: // the time of its beat, though read late
		}
		want, held, err := servicesFromFile(file)
		if held == seen && !hangup {
			s.retry(ctx, now)
			continue
		}
		seen = held
		if err != nil {
			logger.Error("the new list of services is not valid; keeping the services the client has", "error", err)
			continue
		}
		s.reload(ctx, want, now)
	}
}
