package api_test

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	_ "github.com/networkservicemesh/api/pkg/api/ipam" // registers its messages and service
	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"vwire.dev/api/validate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestVectors checks that NSM's module reads and writes each golden encoding exactly as the
// reference implementation does, and that validate accepts what the reference sends.
func TestVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	require.NoError(t, err)
	var vectors []struct {
		Name    string          `json:"name"`
		Message string          `json:"message"`
		JSON    json.RawMessage `json:"json"`
		WireHex string          `json:"wire_hex"`
	}
	require.NoError(t, json.Unmarshal(raw, &vectors))
	require.NotEmpty(t, vectors)

	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			typ, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(v.Message))
			require.NoError(t, err, "message type %s", v.Message)
			wire, err := hex.DecodeString(v.WireHex)
			require.NoError(t, err)

			decoded := typ.New().Interface()
			require.NoError(t, proto.Unmarshal(wire, decoded))
			gotJSON, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(decoded)
			require.NoError(t, err)
			require.JSONEq(t, string(v.JSON), string(gotJSON))

			deterministic := proto.MarshalOptions{Deterministic: true}
			reencoded, err := deterministic.Marshal(decoded)
			require.NoError(t, err)
			require.Equal(t, v.WireHex, hex.EncodeToString(reencoded))

			fromJSON := typ.New().Interface()
			require.NoError(t, protojson.Unmarshal(v.JSON, fromJSON))
			encoded, err := deterministic.Marshal(fromJSON)
			require.NoError(t, err)
			require.Equal(t, v.WireHex, hex.EncodeToString(encoded), "encoding of the vector's JSON")

			require.NoError(t, validateAny(decoded))
		})
	}
}

// TestServices checks every gRPC method of NSM's proto files against services.txt, both ways:
// each line is a method as registered, and each registered method has its line.
func TestServices(t *testing.T) {
	f, err := os.Open("testdata/services.txt")
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()

	want := map[string]string{} // method path -> whole line
	files := map[string]bool{}
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		require.Len(t, fields, 6, "line %q", line)
		want[fields[0]] = line
		files[strings.TrimPrefix(fields[5], "file=")] = true
	}
	require.NoError(t, lines.Err())
	require.NotEmpty(t, want)

	got := map[string]string{}
	for file := range files {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(file)
		require.NoError(t, err, "proto file %s is not registered", file)
		services := fd.Services()
		for i := range services.Len() {
			methods := services.Get(i).Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				path := fmt.Sprintf("/%s/%s", m.Parent().FullName(), m.Name())
				got[path] = fmt.Sprintf("%s in=%s out=%s client_stream=%t server_stream=%t file=%s",
					path, m.Input().FullName(), m.Output().FullName(), m.IsStreamingClient(), m.IsStreamingServer(), fd.Path())
			}
		}
	}
	require.Equal(t, want, got)
}

func validateAny(m proto.Message) error {
	switch m := m.(type) {
	case *networkservice.NetworkServiceRequest:
		return validate.Request(m)
	case *networkservice.Connection:
		return validate.Connection(m)
	case *registry.NetworkService:
		return validate.NetworkService(m)
	case *registry.NetworkServiceEndpoint:
		return validate.NetworkServiceEndpoint(m)
	case *registry.NetworkServiceQuery:
		return validate.NetworkServiceQuery(m)
	case *registry.NetworkServiceEndpointQuery:
		return validate.NetworkServiceEndpointQuery(m)
	}
	return nil
}
