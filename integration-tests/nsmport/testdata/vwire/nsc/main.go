// Command nsc is a client in the shape of a program written with NSM's sdk: it asks for each
// network service of NSM_NETWORK_SERVICES (kernel://service/if-name?label=value) at the node's
// nsmgr, keeps the vWires (the client chain refreshes and heals them), and closes them when
// stopped. integration-tests/nsmport keeps it twice: in NSM's symbols (testdata/nsm/nsc) and
// ported to vwire's (testdata/vwire/nsc), and checks what the port changed.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edwarnicke/grpcfd"
	"github.com/kelseyhightower/envconfig"
	"github.com/sirupsen/logrus"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	kernelmech "github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/excludedprefixes"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/kernel"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/nsurl"
	"vwire.dev/sdk/pkg/tools/spiffejwt"
	"vwire.dev/sdk/pkg/tools/telemetry"
)

// Config is read from NSM_* variables.
type Config struct {
	Name             string        `default:"nsc" desc:"name of the client"`
	ConnectTo        url.URL       `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" desc:"nsmgr URL" split_words:"true"`
	NetworkServices  []url.URL     `default:"" desc:"services to ask for" split_words:"true"`
	DialTimeout      time.Duration `default:"5s" desc:"timeout to dial the nsmgr" split_words:"true"`
	RequestTimeout   time.Duration `default:"15s" desc:"timeout of a Request" split_words:"true"`
	MaxTokenLifetime time.Duration `default:"10m" desc:"token lifetime" split_words:"true"`
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	trace.Enable(true)
	ctx = log.WithLogger(ctx, slog.Default().With("cmd", os.Args[0]))
	logger := log.FromContext(ctx)

	c := &Config{}
	if err := envconfig.Process("nsm", c); err != nil {
		logrus.Fatalf("error processing config from env: %+v", err)
	}
	logger.Info("config", "config", c)

	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		logrus.Fatalf("error getting x509 source: %+v", err)
	}
	tlsClientConfig := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeAny())
	tlsClientConfig.MinVersion = tls.VersionTLS12

	dialOptions := append(telemetry.DialOptions(),
		grpcfd.WithChainStreamInterceptor(),
		grpcfd.WithChainUnaryInterceptor(),
		grpc.WithDefaultCallOptions(
			grpc.WaitForReady(true),
		),
		grpc.WithTransportCredentials(grpcfd.TransportCredentials(credentials.NewTLS(tlsClientConfig))),
	)

	nsmClient := client.NewClient(ctx,
		client.WithClientURL(&c.ConnectTo),
		client.WithName(c.Name),
		client.WithTokenGenerator(spiffejwt.TokenGeneratorFunc(source, c.MaxTokenLifetime)),
		client.WithAdditionalFunctionality(
			clientinfo.NewClient(),
			mechanisms.NewClient(map[string]networkservice.NetworkServiceClient{
				kernelmech.MECHANISM: chain.NewNetworkServiceClient(kernel.NewClient()),
			}),
			sendfd.NewClient(),
			excludedprefixes.NewClient(),
		),
		client.WithDialOptions(dial.WithDialTimeout(c.DialTimeout), dial.WithDialOptions(dialOptions...)),
	)

	signalCtx, cancelSignal := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancelSignal()

	for i := range c.NetworkServices {
		u := (*nsurl.NSURL)(&c.NetworkServices[i])
		request := &networkservice.NetworkServiceRequest{
			Connection: &networkservice.Connection{
				Id:             fmt.Sprintf("%s-%d", c.Name, i),
				NetworkService: u.NetworkService(),
				Labels:         u.Labels(),
			},
			MechanismPreferences: []*networkservice.Mechanism{u.Mechanism()},
		}
		requestCtx, cancelRequest := context.WithTimeout(signalCtx, c.RequestTimeout)
		conn, err := nsmClient.Request(requestCtx, request)
		cancelRequest()
		if err != nil {
			logrus.Fatalf("request for %s failed: %v", u.NetworkService(), err)
		}
		logger.Info("connected", "service", conn.GetNetworkService(), "ip", conn.GetContext().GetIpContext())
		defer func() {
			closeCtx, cancelClose := context.WithTimeout(ctx, c.RequestTimeout)
			defer cancelClose()
			_, _ = nsmClient.Close(closeCtx, conn)
		}()
	}

	<-signalCtx.Done()
}
