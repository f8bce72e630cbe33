// Command nse is an endpoint in the shape of a program written with NSM's sdk: it hands out
// addresses from groups of prefixes, accepts KERNEL interfaces made in its own network
// namespace, and stays registered until it is stopped. integration-tests/nsmport keeps it twice:
// in NSM's symbols (testdata/nsm/nse) and ported to vwire's (testdata/vwire/nse), and checks
// what the port changed.
package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
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
	registryapi "github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/networkservicemesh/sdk/pkg/networkservice/chains/endpoint"
	"github.com/networkservicemesh/sdk/pkg/networkservice/common/authorize"
	"github.com/networkservicemesh/sdk/pkg/networkservice/common/mechanisms"
	"github.com/networkservicemesh/sdk/pkg/networkservice/common/mechanisms/kernel"
	"github.com/networkservicemesh/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"github.com/networkservicemesh/sdk/pkg/networkservice/common/onidle"
	"github.com/networkservicemesh/sdk/pkg/networkservice/ipam/groupipam"
	"github.com/networkservicemesh/sdk/pkg/networkservice/ipam/strictipam"
	registryclient "github.com/networkservicemesh/sdk/pkg/registry/chains/client"
	"github.com/networkservicemesh/sdk/pkg/registry/common/clientinfo"
	registrysendfd "github.com/networkservicemesh/sdk/pkg/registry/common/sendfd"
	"github.com/networkservicemesh/sdk/pkg/tools/grpcutils"
	"github.com/networkservicemesh/sdk/pkg/tools/log"
	"github.com/networkservicemesh/sdk/pkg/tools/log/logruslogger"
	"github.com/networkservicemesh/sdk/pkg/tools/spiffejwt"
	"github.com/networkservicemesh/sdk/pkg/tools/token"
	"github.com/networkservicemesh/sdk/pkg/tools/tracing"
)

// Config is read from NSM_* variables.
type Config struct {
	Name             string        `default:"nse" desc:"name of the endpoint"`
	ConnectTo        url.URL       `default:"unix:///var/lib/networkservicemesh/nsm.io.sock" desc:"nsmgr URL" split_words:"true"`
	MaxTokenLifetime time.Duration `default:"10m" desc:"token lifetime" split_words:"true"`
	ServiceNames     []string      `default:"icmp-responder" desc:"services provided" split_words:"true"`
	Payload          string        `default:"ETHERNET" desc:"payload of the services"`
	Labels           map[string]string
	CidrGroups       []string      `default:"172.16.0.0/24;fd00::/64,10.0.0.0/24" desc:"groups of prefixes, ';' between groups" split_words:"true"`
	IdleTimeout      time.Duration `default:"0" desc:"stop when idle this long" split_words:"true"`
	LogLevel         string        `default:"INFO" desc:"log level" split_words:"true"`
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signalCtx, cancelSignal := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancelSignal()

	log.EnableTracing(true)
	ctx = log.WithLog(ctx, logruslogger.New(ctx, map[string]interface{}{"cmd": os.Args[0]}))
	logger := log.FromContext(ctx)

	config := new(Config)
	if err := envconfig.Process("nsm", config); err != nil {
		logrus.Fatalf("error processing config from env: %+v", err)
	}
	level, err := logrus.ParseLevel(config.LogLevel)
	if err != nil {
		logrus.Fatalf("invalid log level %s", config.LogLevel)
	}
	logrus.SetLevel(level)
	logger.Infof("config: %#v", config)

	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		logrus.Fatalf("error getting x509 source: %+v", err)
	}
	tlsServerConfig := tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeAny())
	tlsServerConfig.MinVersion = tls.VersionTLS12
	tlsClientConfig := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeAny())
	tlsClientConfig.MinVersion = tls.VersionTLS12
	tokens := spiffejwt.TokenGeneratorFunc(source, config.MaxTokenLifetime)

	var groups [][]*net.IPNet
	var all []*net.IPNet
	for _, group := range strings.Split(strings.Join(config.CidrGroups, ","), ";") {
		var prefixes []*net.IPNet
		for _, s := range strings.Split(group, ",") {
			_, prefix, parseErr := net.ParseCIDR(strings.TrimSpace(s))
			if parseErr != nil {
				logrus.Fatalf("invalid CIDR %q: %v", s, parseErr)
			}
			prefixes = append(prefixes, prefix)
		}
		groups = append(groups, prefixes)
		all = append(all, prefixes...)
	}

	responder := endpoint.NewServer(ctx, tokens,
		endpoint.WithName(config.Name),
		endpoint.WithAuthorizeServer(authorize.NewServer()),
		endpoint.WithAdditionalFunctionality(
			onidle.NewServer(ctx, cancel, config.IdleTimeout),
			strictipam.NewServer(func(...*net.IPNet) networkservice.NetworkServiceServer {
				return groupipam.NewServer(groups)
			}, all...),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernelmech.MECHANISM: kernel.NewServer(),
			}),
			sendfd.NewServer(),
		),
	)

	server := grpc.NewServer(append(tracing.WithTracing(),
		grpc.Creds(grpcfd.TransportCredentials(credentials.NewTLS(tlsServerConfig))))...)
	responder.Register(server)
	tmpDir, err := os.MkdirTemp("", config.Name)
	if err != nil {
		logrus.Fatalf("error creating a directory for the socket: %+v", err)
	}
	defer func() { _ = os.RemoveAll(tmpDir) }()
	listenOn := &url.URL{Scheme: "unix", Path: filepath.Join(tmpDir, "listen.on")}
	srvErrCh := grpcutils.ListenAndServe(ctx, listenOn, server)
	go func() {
		for err := range srvErrCh {
			logger.Errorf("grpc server: %v", err)
			cancel()
		}
	}()
	logger.Infof("serving on %s", listenOn)

	dialOptions := append(tracing.WithTracingDial(),
		grpc.WithDefaultCallOptions(
			grpc.WaitForReady(true),
			grpc.PerRPCCredentials(token.NewPerRPCCredentials(tokens))),
		grpc.WithTransportCredentials(grpcfd.TransportCredentials(credentials.NewTLS(tlsClientConfig))),
		grpcfd.WithChainStreamInterceptor(),
		grpcfd.WithChainUnaryInterceptor(),
	)

	nsClient := registryclient.NewNetworkServiceRegistryClient(ctx,
		registryclient.WithClientURL(&config.ConnectTo),
		registryclient.WithDialOptions(dialOptions...))
	for _, service := range config.ServiceNames {
		if _, err = nsClient.Register(ctx, &registryapi.NetworkService{Name: service, Payload: config.Payload}); err != nil {
			logger.Fatalf("unable to register network service %s: %+v", service, err)
		}
	}

	nseClient := registryclient.NewNetworkServiceEndpointRegistryClient(ctx,
		registryclient.WithClientURL(&config.ConnectTo),
		registryclient.WithDialOptions(dialOptions...),
		registryclient.WithNSEAdditionalFunctionality(
			clientinfo.NewNetworkServiceEndpointRegistryClient(),
			registrysendfd.NewNetworkServiceEndpointRegistryClient(),
		),
	)
	nse := &registryapi.NetworkServiceEndpoint{
		Name:                 config.Name,
		NetworkServiceNames:  config.ServiceNames,
		NetworkServiceLabels: map[string]*registryapi.NetworkServiceLabels{},
		Url:                  listenOn.String(),
	}
	for _, service := range config.ServiceNames {
		nse.NetworkServiceLabels[service] = &registryapi.NetworkServiceLabels{Labels: config.Labels}
	}
	nse, err = nseClient.Register(ctx, nse)
	if err != nil {
		logger.Fatalf("unable to register the endpoint: %+v", err)
	}
	logger.Infof("registered %s, expires at %v", nse.GetName(), nse.GetExpirationTime().AsTime())

	<-signalCtx.Done()
	unregisterCtx, cancelUnregister := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelUnregister()
	if _, err = nseClient.Unregister(unregisterCtx, nse); err != nil {
		logger.Errorf("unable to unregister the endpoint: %+v", err)
	}
}
