package spiffe

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/tools/envconfig"
	"vwire.dev/sdk/pkg/tools/log"
	"vwire.dev/sdk/pkg/tools/token"
)

// Config is where a command gets its identity, read from the environment: a command's
// configuration embeds it. Exactly one of the three must be set.
type Config struct {
	SpiffeEndpointSocket string `env:"SPIFFE_ENDPOINT_SOCKET" desc:"the SPIFFE Workload API (a SPIRE agent's socket), unix:///path: where the identity comes from"`
	IdentityDir          string `split_words:"true" desc:"a folder of identity files (svid.pem, svid_key.pem, bundle.pem; cmd-local-ca writes them), read again when they change: the identity of a mesh without SPIRE"`
	Insecure             bool   `split_words:"true" desc:"run without an identity: plain gRPC, tokens signed with a public key, peers unchecked; for tests and trials only"`
	AllowedPeers         IDs    `split_words:"true" desc:"the SPIFFE IDs of the only peers it talks to, as server and client (default: any of its trust domain)"`
}

// Identity is a command's identity, as its Config gives it: the source of its SVID, or none
// (insecure).
type Identity struct {
	src     Source // nil: insecure
	close   func() error
	allowed []spiffeid.ID // empty: any peer of the trust domain
}

// workloadAPIWait bounds how long a command waits at start for its first SVID: a SPIRE agent
// that starts with it is ready in a second, and a workload that is not registered never gets one.
const workloadAPIWait = 30 * time.Second

// Load returns the identity c names, once it has an SVID, and logs which it is.
func (c Config) Load(ctx context.Context) (*Identity, error) {
	var set []string
	if c.SpiffeEndpointSocket != "" {
		set = append(set, "SPIFFE_ENDPOINT_SOCKET")
	}
	if c.IdentityDir != "" {
		set = append(set, "NSM_IDENTITY_DIR")
	}
	if c.Insecure {
		set = append(set, "NSM_INSECURE")
	}
	logger := log.FromContext(ctx)
	if c.Insecure && len(c.AllowedPeers) > 0 {
		return nil, &envconfig.Error{Var: "NSM_ALLOWED_PEERS", Value: fmt.Sprint(c.AllowedPeers), Problem: "peers are known only by their SVIDs, and NSM_INSECURE=true has none; unset one of them"}
	}
	id := Identity{allowed: c.AllowedPeers}
	switch {
	case len(set) == 0:
		return nil, &envconfig.Error{Var: "SPIFFE_ENDPOINT_SOCKET", Unset: true, Problem: "no identity: set SPIFFE_ENDPOINT_SOCKET to the SPIRE agent's socket, or NSM_IDENTITY_DIR to a folder of SVID files, or NSM_INSECURE=true to run without one"}
	case len(set) > 1:
		return nil, &envconfig.Error{Var: set[0], Unset: true, Problem: fmt.Sprintf("%s are set; each names where the identity comes from, so set one", strings.Join(set, " and "))}
	case c.Insecure:
		logger.Warn("INSECURE: no identity (NSM_INSECURE=true): gRPC without TLS, tokens signed with a public key; any local process may act as any peer")
		return &id, nil
	case c.IdentityDir != "":
		src, err := Files(c.IdentityDir)
		if err != nil {
			return nil, &envconfig.Error{Var: "NSM_IDENTITY_DIR", Value: c.IdentityDir, Problem: err.Error()}
		}
		id.src = src
	default:
		if !strings.HasPrefix(c.SpiffeEndpointSocket, "unix://") && !strings.HasPrefix(c.SpiffeEndpointSocket, "tcp://") {
			return nil, &envconfig.Error{Var: "SPIFFE_ENDPOINT_SOCKET", Value: c.SpiffeEndpointSocket, Problem: "not a Workload API address; use unix:///path/to/agent.sock"}
		}
		logger.Info("waiting for an SVID from the Workload API", "address", c.SpiffeEndpointSocket)
		waitCtx, cancel := context.WithTimeout(ctx, workloadAPIWait)
		defer cancel()
		src, err := WorkloadAPI(waitCtx, c.SpiffeEndpointSocket)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			return nil, fmt.Errorf("SPIFFE_ENDPOINT_SOCKET=%s: %w", c.SpiffeEndpointSocket, err)
		}
		id.src, id.close = src, src.Close
	}
	svid, err := id.src.GetX509SVID()
	if err != nil {
		_ = id.Close()
		return nil, err
	}
	logger.Info("identity", "spiffe_id", svid.ID.String(), "from", set[0], "expires", svid.Certificates[0].NotAfter)
	return &id, nil
}

// Insecure reports whether there is no identity.
func (i *Identity) Insecure() bool { return i.src == nil }

// Source is the identity's source; nil when insecure.
func (i *Identity) Source() Source { return i.src }

// ID is the identity's SPIFFE ID now; the zero ID when insecure.
func (i *Identity) ID() spiffeid.ID {
	if i.src == nil {
		return spiffeid.ID{}
	}
	id, _ := ID(i.src)
	return id
}

// ServerOptions are a gRPC server's options for the identity: mutual TLS; none when insecure.
func (i *Identity) ServerOptions() []grpc.ServerOption {
	if i.src == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(ServerCredentials(i.src, WithAllowedIDs(i.allowed...)))}
}

// DialOptions are a gRPC client's options for the identity: mutual TLS; none when insecure.
func (i *Identity) DialOptions() []grpc.DialOption {
	if i.src == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(ClientCredentials(i.src, WithAllowedIDs(i.allowed...)))}
}

// Tokens returns the generator of the identity's path tokens lasting lifetime; when insecure,
// token.NewInsecure's, issued by name.
func (i *Identity) Tokens(name string, lifetime time.Duration) (token.GeneratorFunc, error) {
	if i.src == nil {
		return token.NewInsecure(lifetime, token.WithName(name)), nil
	}
	return Tokens(i.src, lifetime)
}

// Close releases the source (a Workload API connection).
func (i *Identity) Close() error {
	if i.close == nil {
		return nil
	}
	err := i.close()
	i.close = nil
	return err
}

// IDs is a list of SPIFFE IDs in a command's configuration (envconfig.Value): comma-separated
// spiffe://trust-domain/path.
type IDs []spiffeid.ID

// Decode reads value, naming the item that is not a SPIFFE ID.
func (ids *IDs) Decode(value string) error {
	return envconfig.DecodeList(value, func(item string) error {
		id, err := spiffeid.FromString(item)
		if err != nil {
			return fmt.Errorf("not a SPIFFE ID (spiffe://trust-domain/path): %w", err)
		}
		*ids = append(*ids, id)
		return nil
	})
}

// TypeName names the type for a command's usage.
func (IDs) TypeName() string { return "SPIFFE ID list" }
