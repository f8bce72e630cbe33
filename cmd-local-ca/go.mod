module vwire.dev/cmd-local-ca

go 1.26.8

replace vwire.dev/sdk => ../sdk

replace vwire.dev/api => ../api

require (
	github.com/spiffe/go-spiffe/v2 v2.9.0
	vwire.dev/sdk v0.0.0-00010101000000-000000000000
)

require (
	github.com/Microsoft/go-winio v0.6.2 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/edwarnicke/grpcfd v1.1.4 // indirect
	github.com/edwarnicke/serialize v0.0.0-20200705214914-ebc43080eecf // indirect
	github.com/go-jose/go-jose/v4 v4.1.5 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/networkservicemesh/api v1.15.0-rc.1.0.20250625083423-2e0c8496e4e3 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel v1.47.0 // indirect
	go.opentelemetry.io/otel/log v1.47.0 // indirect
	go.opentelemetry.io/otel/metric v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	vwire.dev/api v0.0.0-00010101000000-000000000000 // indirect
)
