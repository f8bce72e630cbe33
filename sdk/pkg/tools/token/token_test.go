package token_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/tools/clock"
	"vwire.dev/sdk/pkg/tools/spiffe"
	"vwire.dev/sdk/pkg/tools/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = time.Date(2025, 6, 1, 12, 0, 0, 250_000_000, time.UTC)

func must[K any](k K, err error) K {
	if err != nil {
		panic(err)
	}
	return k
}

func TestGeneratorsRoundTrip(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	p521 := must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader))
	rsaKey := must(rsa.GenerateKey(rand.Reader, 2048))
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	fake := clock.NewFake(start)
	tests := []struct {
		name    string
		gen     token.GeneratorFunc
		alg     string
		verify  any // key that verifies the signature
		subject string
		aud     []string
	}{
		{"insecure", token.NewInsecure(time.Minute, token.WithClock(fake)), "HS256", []byte(token.InsecureKey), token.InsecureName, nil},
		{"insecure named", token.NewInsecure(time.Minute, token.WithClock(fake), token.WithName("nsc-1")), "HS256", []byte(token.InsecureKey), "nsc-1", nil},
		{"ES256", token.NewJWT(p256, "spiffe://example.org/nsmgr", time.Minute, token.WithClock(fake)), "ES256", &p256.PublicKey, "spiffe://example.org/nsmgr", nil},
		{"ES384 with audience", token.NewJWT(p384, "fwd-a", time.Minute, token.WithClock(fake), token.WithAudience("nse-1")), "ES384", &p384.PublicKey, "fwd-a", []string{"nse-1"}},
		{"ES512", token.NewJWT(p521, "fwd-b", time.Minute, token.WithClock(fake)), "ES512", &p521.PublicKey, "fwd-b", nil},
		{"RS256", token.NewJWT(rsaKey, "registry", time.Minute, token.WithClock(fake)), "RS256", &rsaKey.PublicKey, "registry", nil},
		{"EdDSA", token.NewJWT(edKey, "nse-1", time.Minute, token.WithClock(fake)), "EdDSA", edKey.Public(), "nse-1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, expires, err := tt.gen(nil)
			require.NoError(t, err)
			require.Equal(t, start.Add(time.Minute).Truncate(time.Second), expires, "expiry is the exp claim, in whole seconds")

			var claims jwt.RegisteredClaims
			parsed, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return tt.verify, nil },
				jwt.WithValidMethods([]string{tt.alg}), jwt.WithTimeFunc(fake.Now))
			require.NoError(t, err, "the signature verifies with the public key")
			require.True(t, parsed.Valid)
			require.Equal(t, tt.subject, claims.Subject)
			require.Empty(t, claims.Issuer, "sub names the hop; no iss repeats it")
			require.Nil(t, claims.IssuedAt, "no iat: nobody reads it")
			require.NotContains(t, parsed.Header, "typ", "the header has the algorithm and the chain only")
			require.Equal(t, jwt.ClaimStrings(tt.aud), claims.Audience)
			require.True(t, claims.ExpiresAt.Equal(expires))

			_, err = jwt.ParseWithClaims(tok, &jwt.RegisteredClaims{}, func(*jwt.Token) (any, error) { return tt.verify, nil },
				jwt.WithTimeFunc(func() time.Time { return expires.Add(time.Second) }))
			require.ErrorIs(t, err, jwt.ErrTokenExpired, "the token expires after its lifetime")
		})
	}
}

// tlsPeer is the transport's view of a TLS peer whose certificate names id.
func tlsPeer(id string) credentials.AuthInfo {
	u, err := url.Parse(id)
	if err != nil {
		panic(err)
	}
	return credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}}
}

func claimsOf(t *testing.T, tok string) *jwt.RegisteredClaims {
	t.Helper()
	var claims jwt.RegisteredClaims
	_, _, err := jwt.NewParser().ParseUnverified(tok, &claims)
	require.NoError(t, err)
	return &claims
}

func TestTokensAreReusedWithinTheirSecond(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	generators := map[string]func(clock.Clock) token.GeneratorFunc{
		"insecure": func(c clock.Clock) token.GeneratorFunc { return token.NewInsecure(time.Minute, token.WithClock(c)) },
		"ES256": func(c clock.Clock) token.GeneratorFunc {
			return token.NewJWT(p256, "fwd-a", time.Minute, token.WithClock(c))
		},
	}
	// Steps run in order on one generator; the clock starts at 12:00:00.250.
	steps := []struct {
		name    string
		advance time.Duration
		peer    string // "": no TLS peer, no audience
		want    string // the earlier step whose token this one returns; "": a new token
	}{
		{name: "first"},
		{name: "later in the same second", advance: 700 * time.Millisecond, want: "first"},
		{name: "another audience", peer: "spiffe://example.org/nsc"},
		{name: "back to the first audience", want: "first"},
		{name: "the first audience again, same second", peer: "spiffe://example.org/nsc", want: "another audience"},
		{name: "the next second", advance: 100 * time.Millisecond},
		{name: "the next second, later", advance: 899 * time.Millisecond, want: "the next second"},
		{name: "a minute on", advance: time.Minute},
	}
	for name, newGen := range generators {
		t.Run(name, func(t *testing.T) {
			fake := clock.NewFake(start)
			gen := newGen(fake)
			got := map[string]string{}
			for _, step := range steps {
				fake.Advance(step.advance)
				var info credentials.AuthInfo
				if step.peer != "" {
					info = tlsPeer(step.peer)
				}
				tok, expires, err := gen(info)
				require.NoError(t, err, step.name)
				// Exactly what a fresh token would say: never older, never closer to expiry.
				now := fake.Now()
				require.Equal(t, now.Add(time.Minute).Truncate(time.Second), expires, step.name)
				claims := claimsOf(t, tok)
				require.True(t, claims.ExpiresAt.Equal(expires), step.name)
				if step.peer != "" {
					require.Equal(t, jwt.ClaimStrings{step.peer}, claims.Audience, step.name)
				} else {
					require.Empty(t, claims.Audience, step.name)
				}
				if step.want != "" {
					require.Equal(t, got[step.want], tok, "%s: the token of %q is reused", step.name, step.want)
				} else {
					for earlier, other := range got {
						require.NotEqual(t, other, tok, "%s: a new token, not the one of %q", step.name, earlier)
					}
				}
				got[step.name] = tok
			}
		})
	}
}

func TestReuseIsSafeAndBounded(t *testing.T) {
	fake := clock.NewFake(start)
	gen := token.NewInsecure(time.Minute, token.WithClock(fake))
	want, wantExpires, err := gen(nil)
	require.NoError(t, err)

	// Many audiences in one second: each gets its own token; what is remembered stays bounded
	// (nothing to see from outside but that every answer is right).
	for i := range 200 {
		peer := fmt.Sprintf("spiffe://example.org/nsc-%d", i)
		tok, _, err := gen(tlsPeer(peer))
		require.NoError(t, err)
		require.Equal(t, jwt.ClaimStrings{peer}, claimsOf(t, tok).Audience)
	}

	// Concurrent callers all get the token of the second (HS256 signs the same claims to the
	// same token, whether reused or signed again).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				tok, expires, err := gen(nil)
				assert.NoError(t, err)
				assert.Equal(t, want, tok)
				assert.Equal(t, wantExpires, expires)
			}
		})
	}
	wg.Wait()
}

func TestAudienceIsTheTLSPeer(t *testing.T) {
	const peerID = "spiffe://example.org/ns/default/sa/nsc"
	tok, _, err := token.NewInsecure(time.Minute)(tlsPeer(peerID))
	require.NoError(t, err)
	require.Equal(t, jwt.ClaimStrings{peerID}, claimsOf(t, tok).Audience)
}

// oddSigner has a key type JWT has no algorithm for.
type oddSigner struct{}

func (oddSigner) Public() crypto.PublicKey                                  { return "not a key" }
func (oddSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, nil }

func TestUnsupportedKeyIsAnError(t *testing.T) {
	p224 := must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))
	for name, signer := range map[string]crypto.Signer{"string key": oddSigner{}, "P-224": p224} {
		t.Run(name, func(t *testing.T) {
			_, _, err := token.NewJWT(signer, "nsc", time.Minute)(nil)
			require.ErrorContains(t, err, "token: sign token of nsc")
			require.ErrorContains(t, err, "no JWT algorithm")
		})
	}
}

func TestConstructorsRejectMisuse(t *testing.T) {
	require.PanicsWithValue(t, "token: NewJWT needs a signer", func() { token.NewJWT(nil, "nsc", time.Minute) })
	require.Panics(t, func() { token.NewInsecure(time.Millisecond) }, "a lifetime under a second")
	require.Panics(t, func() { token.NewPerRPCCredentials(nil) })
}

func TestFromIncomingContext(t *testing.T) {
	exp := "2025-06-01T12:01:00.123456789Z"
	tests := []struct {
		name   string
		md     metadata.MD
		wantOK bool
	}{
		{"both keys", metadata.Pairs(token.TokenKey, "t", token.ExpiresKey, exp), true},
		{"no metadata", nil, false},
		{"no token", metadata.Pairs(token.ExpiresKey, exp), false},
		{"empty token", metadata.Pairs(token.TokenKey, "", token.ExpiresKey, exp), false},
		{"no expiry", metadata.Pairs(token.TokenKey, "t"), false},
		{"two tokens", metadata.Pairs(token.TokenKey, "t", token.TokenKey, "u", token.ExpiresKey, exp), false},
		{"unreadable expiry", metadata.Pairs(token.TokenKey, "t", token.ExpiresKey, "tomorrow"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tt.md)
			}
			tok, expires, ok := token.FromIncomingContext(ctx)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				require.Equal(t, "t", tok)
				require.Equal(t, time.Date(2025, 6, 1, 12, 1, 0, 123456789, time.UTC), expires)
			}
		})
	}
}

// tokenEcho answers a Request with the token it received in the connection's labels.
type tokenEcho struct{}

func (tokenEcho) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	tok, expires, ok := token.FromIncomingContext(ctx)
	conn := req.GetConnection()
	conn.Labels = map[string]string{"token": tok, "expires": expires.Format(time.RFC3339Nano)}
	if ok {
		conn.Labels["raw-expires"] = md.Get(token.ExpiresKey)[0]
	}
	return conn, nil
}

func (tokenEcho) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func TestPerRPCCredentialsOverGRPC(t *testing.T) {
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nse.sock")
	lis, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := grpc.NewServer()
	networkservice.RegisterNetworkServiceServer(srv, tokenEcho{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	local := time.FixedZone("UTC+3", 3*3600)
	fake := clock.NewFake(start.In(local))
	gen := token.NewInsecure(time.Hour, token.WithClock(fake), token.WithName("nsc-1"))
	cc, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	client := networkservice.NewNetworkServiceClient(cc)

	for i, advance := range []time.Duration{0, 10 * time.Minute} {
		fake.Advance(advance)
		conn, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
		require.NoError(t, err)
		want, wantExpires, err := gen(nil)
		require.NoError(t, err)
		require.Equal(t, want, conn.GetLabels()["token"], "call %d carries a fresh token", i)
		require.Equal(t, wantExpires.UTC().Format(time.RFC3339Nano), conn.GetLabels()["raw-expires"], "RFC 3339 in UTC")
		got, err := time.Parse(time.RFC3339Nano, conn.GetLabels()["expires"])
		require.NoError(t, err)
		require.True(t, got.Equal(wantExpires))
	}
}

// BenchmarkGenerators measures a generator asked within one second (the token is reused, as on
// a busy hop) and asked once a second (each call signs).
func BenchmarkGenerators(b *testing.B) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	for name, newGen := range map[string]func(clock.Clock) token.GeneratorFunc{
		"insecure": func(c clock.Clock) token.GeneratorFunc { return token.NewInsecure(time.Minute, token.WithClock(c)) },
		"ES256": func(c clock.Clock) token.GeneratorFunc {
			return token.NewJWT(p256, "spiffe://example.org/nsc", time.Minute, token.WithClock(c))
		},
	} {
		for _, step := range []time.Duration{0, time.Second} {
			b.Run(fmt.Sprintf("%s/every-%v", name, step), func(b *testing.B) {
				fake := clock.NewFake(start)
				gen := newGen(fake)
				b.ReportAllocs()
				for b.Loop() {
					fake.Advance(step)
					if _, _, err := gen(nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestPerRPCTokensAreAddressedToTheNextHop calls over mutual TLS from a context that carries the
// peer of an incoming call, as a server's chain does when it calls on: the token is addressed to
// the server called (gRPC puts the peer of the call's own transport in the context it gives the
// credentials), not to the caller of the chain. The next hop's policies rely on it.
func TestPerRPCTokensAreAddressedToTheNextHop(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("mesh.test")
	ca := must(spiffe.NewCA(td))
	nsmgr, fwd := spiffeid.RequireFromPath(td, "/nsmgr"), spiffeid.RequireFromPath(td, "/fwd")
	nsmgrSrc, fwdSrc := must(ca.Source(nsmgr, time.Hour)), must(ca.Source(fwd, time.Hour))

	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	lis, err := net.Listen("unix", filepath.Join(dir, "fwd.sock"))
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.Creds(spiffe.ServerCredentials(fwdSrc)))
	networkservice.RegisterNetworkServiceServer(srv, tokenEcho{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	gen := must(spiffe.Tokens(nsmgrSrc, time.Minute))
	cc, err := grpc.NewClient("unix://"+lis.Addr().String(),
		grpc.WithTransportCredentials(spiffe.ClientCredentials(nsmgrSrc)),
		grpc.WithPerRPCCredentials(token.NewPerRPCCredentials(gen)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })

	incoming := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: tlsPeer("spiffe://mesh.test/nsc")})
	conn, err := networkservice.NewNetworkServiceClient(cc).Request(incoming,
		&networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
	require.NoError(t, err)
	verified, err := token.NewVerifier(ca.Bundle()).Verify(conn.GetLabels()["token"])
	require.NoError(t, err)
	require.Equal(t, nsmgr, verified.Signer)
	require.Equal(t, jwt.ClaimStrings{fwd.String()}, verified.Claims.Audience)
}
