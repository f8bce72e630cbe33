package clienturl_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/clienturl"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen records the client URL in the context of each call that reaches it.
type seen struct{ urls []string }

func (s *seen) record(ctx context.Context) {
	if u := clienturl.ClientURL(ctx); u != nil {
		s.urls = append(s.urls, u.String())
	} else {
		s.urls = append(s.urls, "<nil>")
	}
}

func (s *seen) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	s.record(ctx)
	return next.Server(ctx).Request(ctx, req)
}

func (s *seen) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	s.record(ctx)
	return next.Server(ctx).Close(ctx, conn)
}

type side struct {
	request func(ctx context.Context, req *networkservice.NetworkServiceRequest) error
	close   func(ctx context.Context, conn *networkservice.Connection) error
}

func serverSide(u *url.URL, s *seen) side {
	srv := chain.NewNetworkServiceServer(clienturl.NewServer(u), s)
	return side{
		request: func(ctx context.Context, req *networkservice.NetworkServiceRequest) error {
			_, err := srv.Request(ctx, req)
			return err
		},
		close: func(ctx context.Context, conn *networkservice.Connection) error {
			_, err := srv.Close(ctx, conn)
			return err
		},
	}
}

func clientSide(u *url.URL, s *seen) side {
	c := chain.NewNetworkServiceClient(clienturl.NewClient(u), adapters.NewServerToClient(s))
	return side{
		request: func(ctx context.Context, req *networkservice.NetworkServiceRequest) error {
			_, err := c.Request(ctx, req)
			return err
		},
		close: func(ctx context.Context, conn *networkservice.Connection) error {
			_, err := c.Close(ctx, conn)
			return err
		},
	}
}

func TestElementSetsURL(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		ctxIn string // a URL already in the caller's context, replaced by the element's
		make  func(*url.URL, *seen) side
	}{
		{name: "server unix", url: "unix:///tmp/vw/nsm.sock", make: serverSide},
		{name: "server tcp ipv6 replaces caller's", url: "tcp://[::1]:5001", ctxIn: "tcp://127.0.0.1:5001", make: serverSide},
		{name: "client tcp ipv4", url: "tcp://127.0.0.1:5001", make: clientSide},
		{name: "client replaces caller's", url: "tcp://[::1]:5001", ctxIn: "unix:///old.sock", make: clientSide},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			require.NoError(t, err)
			s := &seen{}
			elem := tt.make(u, s)
			ctx := context.Background()
			if tt.ctxIn != "" {
				in, err := url.Parse(tt.ctxIn)
				require.NoError(t, err)
				ctx = clienturl.WithClientURL(ctx, in)
			}
			u.Path = "/changed-by-caller" // the element keeps the URL it was given

			conn := &networkservice.Connection{Id: "c1"}
			require.NoError(t, elem.request(ctx, &networkservice.NetworkServiceRequest{Connection: conn}))
			require.NoError(t, elem.close(ctx, conn))
			require.Equal(t, []string{tt.url, tt.url}, s.urls)
		})
	}
}

func TestClientURLAbsent(t *testing.T) {
	require.Nil(t, clienturl.ClientURL(context.Background()))
}

func TestNilURLPanics(t *testing.T) {
	require.PanicsWithValue(t, "clienturl: NewServer needs a URL, got nil", func() { clienturl.NewServer(nil) })
	require.PanicsWithValue(t, "clienturl: NewClient needs a URL, got nil", func() { clienturl.NewClient(nil) })
}
