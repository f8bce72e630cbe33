package validate_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"vwire.dev/api/validate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireField checks that err is nil when field is empty, and otherwise an InvalidArgument
// naming field.
func requireField(t *testing.T, field string, err error) {
	t.Helper()
	if field == "" {
		require.NoError(t, err)
		return
	}
	var verr *validate.Error
	require.ErrorAs(t, err, &verr)
	require.Equal(t, field, verr.Field, "error: %v", err)
	require.NotEmpty(t, verr.Problem)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

func kernelMechanism(name string) *networkservice.Mechanism {
	return &networkservice.Mechanism{
		Cls:  cls.LOCAL,
		Type: kernel.MECHANISM,
		Parameters: map[string]string{
			kernel.InterfaceNameKey: name,
			kernel.NetNSURL:         "file:///proc/42/ns/net",
		},
	}
}

func validConnection() *networkservice.Connection {
	expired := timestamppb.New(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
	return &networkservice.Connection{
		Id:             "conn-1",
		NetworkService: "icmp-responder",
		Mechanism:      kernelMechanism("nsm-1"),
		Context: &networkservice.ConnectionContext{
			IpContext: &networkservice.IPContext{
				SrcIpAddrs: []string{"172.16.1.101/32", "fd00::1/64"},
				DstIpAddrs: []string{"172.16.1.100/32"},
				SrcRoutes:  []*networkservice.Route{{Prefix: "172.16.1.100/32"}},
				DstRoutes:  []*networkservice.Route{{Prefix: "::/0", NextHop: "fd00::2"}},
			},
			EthernetContext: &networkservice.EthernetContext{SrcMac: "02:00:00:00:00:02"},
		},
		Path: &networkservice.Path{
			Index: 1,
			PathSegments: []*networkservice.PathSegment{
				{Name: "nsc-1", Id: "conn-1", Token: "expired", Expires: expired},
				{Name: "nsmgr-1", Id: "seg-2", Expires: expired},
			},
		},
		NetworkServiceEndpointName: "nse-1",
		Payload:                    payload.IP,
		State:                      networkservice.State_RESELECT_REQUESTED,
	}
}

func TestConnection(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *networkservice.Connection)
		field  string
	}{
		{name: "valid, with expired tokens", change: func(*networkservice.Connection) {}},
		{name: "nil mechanism and context", change: func(c *networkservice.Connection) { c.Mechanism, c.Context = nil, nil }},
		{name: "mechanism without name", change: func(c *networkservice.Connection) {
			delete(c.Mechanism.Parameters, kernel.InterfaceNameKey)
		}},
		{name: "interdomain service", change: func(c *networkservice.Connection) { c.NetworkService = "vpn@corp.example" }},
		{name: "ethernet payload", change: func(c *networkservice.Connection) { c.Payload = payload.Ethernet }},
		{name: "no path", change: func(c *networkservice.Connection) { c.Path = nil }},
		{name: "empty id", change: func(c *networkservice.Connection) { c.Id = "" }, field: "connection.id"},
		{name: "empty service", change: func(c *networkservice.Connection) { c.NetworkService = "" }, field: "connection.network_service"},
		{name: "bad service", change: func(c *networkservice.Connection) { c.NetworkService = "icmp responder" }, field: "connection.network_service"},
		{name: "bad interface name", change: func(c *networkservice.Connection) {
			c.Mechanism.Parameters[kernel.InterfaceNameKey] = "nsm-icmp-responder0"
		}, field: `connection.mechanism.parameters["name"]`},
		{name: "bad src ip", change: func(c *networkservice.Connection) {
			c.Context.IpContext.SrcIpAddrs[1] = "fd00::1"
		}, field: "connection.context.ip_context.src_ip_addrs[1]"},
		{name: "bad src mac", change: func(c *networkservice.Connection) {
			c.Context.EthernetContext.SrcMac = "02:00"
		}, field: "connection.context.ethernet_context.src_mac"},
		{name: "bad dst mac", change: func(c *networkservice.Connection) {
			c.Context.EthernetContext.DstMac = "zz:00:00:00:00:00"
		}, field: "connection.context.ethernet_context.dst_mac"},
		{name: "index past path", change: func(c *networkservice.Connection) { c.Path.Index = 2 }, field: "connection.path.index"},
		{name: "unnamed segment", change: func(c *networkservice.Connection) {
			c.Path.PathSegments[1].Name = ""
		}, field: "connection.path.path_segments[1].name"},
		{name: "bad endpoint name", change: func(c *networkservice.Connection) {
			c.NetworkServiceEndpointName = "-nse"
		}, field: "connection.network_service_endpoint_name"},
		{name: "bad payload", change: func(c *networkservice.Connection) { c.Payload = "ip" }, field: "connection.payload"},
		{name: "state out of range", change: func(c *networkservice.Connection) { c.State = 4 }, field: "connection.state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConnection()
			tt.change(c)
			requireField(t, tt.field, validate.Connection(c))
		})
	}
	requireField(t, "connection", validate.Connection(nil))
}

func TestRequest(t *testing.T) {
	vxlanPreference := &networkservice.Mechanism{
		Cls:        cls.REMOTE,
		Type:       vxlan.MECHANISM,
		Parameters: map[string]string{vxlan.SrcIP: "192.0.2.1", vxlan.SrcPort: "4789"},
	}
	tests := []struct {
		name    string
		request *networkservice.NetworkServiceRequest
		field   string
	}{
		{name: "valid", request: &networkservice.NetworkServiceRequest{
			Connection:           validConnection(),
			MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}, vxlanPreference},
		}},
		{name: "no preferences", request: &networkservice.NetworkServiceRequest{Connection: validConnection()}},
		{name: "nil", field: "request"},
		{name: "no connection", request: &networkservice.NetworkServiceRequest{}, field: "connection"},
		{name: "bad connection", request: &networkservice.NetworkServiceRequest{
			Connection: &networkservice.Connection{NetworkService: "ns"},
		}, field: "connection.id"},
		{name: "nil preference", request: &networkservice.NetworkServiceRequest{
			Connection:           validConnection(),
			MechanismPreferences: []*networkservice.Mechanism{vxlanPreference, nil},
		}, field: "mechanism_preferences[1]"},
		{name: "bad preference", request: &networkservice.NetworkServiceRequest{
			Connection:           validConnection(),
			MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: "FOO"}},
		}, field: "mechanism_preferences[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireField(t, tt.field, validate.Request(tt.request))
		})
	}
}

func TestErrorMessageAndStatus(t *testing.T) {
	c := validConnection()
	c.Mechanism.Parameters[kernel.InterfaceNameKey] = "nsm-icmp-responder0"
	err := validate.Request(&networkservice.NetworkServiceRequest{Connection: c})
	require.EqualError(t, err, `connection.mechanism.parameters["name"]: interface name "nsm-icmp-responder0" is 19 bytes, limit 15`)

	wrapped := fmt.Errorf("authorize: %w", fmt.Errorf("request: %w", err))
	require.Equal(t, codes.InvalidArgument, status.Code(wrapped))
	st, ok := status.FromError(wrapped)
	require.True(t, ok)
	require.Contains(t, st.Message(), "nsm-icmp-responder0")
}

func TestFirstErrorIsDeterministic(t *testing.T) {
	m := &networkservice.Mechanism{Cls: cls.REMOTE, Type: vxlan.MECHANISM, Parameters: map[string]string{}}
	for _, key := range []string{vxlan.VNI, vxlan.SrcIP, vxlan.DstIP, vxlan.SrcPort, vxlan.DstPort, vxlan.MTU} {
		m.Parameters[key] = "bad"
	}
	for range 20 {
		requireField(t, `mechanism.parameters["MTU"]`, validate.Mechanism(m)) // sorts first
	}
}

func TestIPContext(t *testing.T) {
	tests := []struct {
		name  string
		ctx   *networkservice.IPContext
		field string
	}{
		{name: "nil"},
		{name: "dual stack", ctx: &networkservice.IPContext{
			SrcIpAddrs:       []string{"10.0.0.1/24", "fd00::1/64"},
			DstIpAddrs:       []string{"fd00::2/128", "10.0.0.2/32"},
			SrcRoutes:        []*networkservice.Route{{Prefix: "10.0.0.0/8", NextHop: "10.0.0.2"}},
			DstRoutes:        []*networkservice.Route{{Prefix: "::/0"}},
			ExcludedPrefixes: []string{"10.96.0.0/12"},
			IpNeighbors:      []*networkservice.IpNeighbor{{Ip: "fd00::2", HardwareAddress: "02:00:00:00:00:01"}},
			ExtraPrefixes:    []string{"fd01::/64"},
			Policies: []*networkservice.PolicyRoute{{
				From: "10.0.0.1/32", Proto: "6", DstPort: "80-90", SrcPort: "1000",
				Routes: []*networkservice.Route{{Prefix: "0.0.0.0/0", NextHop: "10.0.0.2"}},
			}, {}},
		}},
		{name: "src addr without length", ctx: &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1"}}, field: "ip_context.src_ip_addrs[0]"},
		{name: "dst addr", ctx: &networkservice.IPContext{DstIpAddrs: []string{"10.0.0.1/24", "10.0.0.300/32"}}, field: "ip_context.dst_ip_addrs[1]"},
		{name: "src route prefix", ctx: &networkservice.IPContext{SrcRoutes: []*networkservice.Route{{}}}, field: "ip_context.src_routes[0].prefix"},
		{name: "dst route next hop", ctx: &networkservice.IPContext{
			DstRoutes: []*networkservice.Route{{Prefix: "::/0", NextHop: "fd00::/64"}},
		}, field: "ip_context.dst_routes[0].nextHop"},
		{name: "excluded prefix", ctx: &networkservice.IPContext{ExcludedPrefixes: []string{"10.96.0.0/33"}}, field: "ip_context.excluded_prefixes[0]"},
		{name: "neighbor ip", ctx: &networkservice.IPContext{
			IpNeighbors: []*networkservice.IpNeighbor{{HardwareAddress: "02:00:00:00:00:01"}},
		}, field: "ip_context.ip_neighbors[0].ip"},
		{name: "neighbor mac", ctx: &networkservice.IPContext{
			IpNeighbors: []*networkservice.IpNeighbor{{Ip: "10.0.0.1", HardwareAddress: "02:00:00"}},
		}, field: "ip_context.ip_neighbors[0].hardware_address"},
		{name: "extra prefix", ctx: &networkservice.IPContext{ExtraPrefixes: []string{"fd00::"}}, field: "ip_context.extra_prefixes[0]"},
		{name: "policy from", ctx: &networkservice.IPContext{
			Policies: []*networkservice.PolicyRoute{{From: "10.0.0.1"}},
		}, field: "ip_context.policies[0].from"},
		{name: "policy dst port", ctx: &networkservice.IPContext{
			Policies: []*networkservice.PolicyRoute{{DstPort: "80-90-100"}},
		}, field: "ip_context.policies[0].dst_port"},
		{name: "policy src port", ctx: &networkservice.IPContext{
			Policies: []*networkservice.PolicyRoute{{SrcPort: "70000"}},
		}, field: "ip_context.policies[0].src_port"},
		{name: "policy route", ctx: &networkservice.IPContext{
			Policies: []*networkservice.PolicyRoute{{}, {Routes: []*networkservice.Route{{Prefix: "x"}}}},
		}, field: "ip_context.policies[1].routes[0].prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireField(t, tt.field, validate.IPContext(tt.ctx))
		})
	}
}

func TestName(t *testing.T) {
	for _, name := range []string{"a", "icmp-responder", "nse_1.v2", "vpn@corp.example", "Ns@Cluster-2", strings.Repeat("a", 253)} {
		require.NoError(t, validate.Name(name), name)
	}
	for _, name := range []string{"", "@corp", "ns@", "-ns", "ns.", "n s", "ns:1", "a@b@c", "ns@corp..example", "ns@-corp",
		"ns@corp_example", strings.Repeat("a", 254), "ns@" + strings.Repeat("a", 64)} {
		require.Error(t, validate.Name(name), name)
	}
}

func TestInterfaceName(t *testing.T) {
	for _, name := range []string{"nsm-1", "eth0", strings.Repeat("x", 15), "a.b", "...", "ü"} {
		require.NoError(t, validate.InterfaceName(name), name)
	}
	for _, name := range []string{"", ".", "..", strings.Repeat("x", 16), "a/b", "a:b", "a b", "a\tb", "a\x00"} {
		require.Error(t, validate.InterfaceName(name), name)
	}
}

// FuzzValidate feeds arbitrary bytes, read as each kind of message, to every validator: any
// input gives an error or nil, never a panic, and an error short enough to send back whatever
// the input held (values are quoted only in part).
func FuzzValidate(f *testing.F) {
	overLabels := validConnection()
	overLabels.Labels = labelsOf(validate.MaxLabels+1, 0, 1)
	longName := validEndpoint()
	longName.Name = strings.Repeat("n", 3000)
	for _, m := range []proto.Message{
		&networkservice.NetworkServiceRequest{Connection: validConnection()},
		&networkservice.NetworkServiceRequest{Connection: overLabels, MechanismPreferences: preferences(validate.MaxMechanismPreferences + 1)},
		validNetworkService(),
		validEndpoint(),
		longName,
	} {
		seed, err := proto.Marshal(m)
		require.NoError(f, err)
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		short := func(err error) {
			if err != nil && len(err.Error()) > 2048 {
				t.Fatalf("an error of %d bytes: %.200s", len(err.Error()), err)
			}
		}
		request := new(networkservice.NetworkServiceRequest)
		if proto.Unmarshal(data, request) == nil {
			short(validate.Request(request))
			short(validate.Mechanism(request.GetConnection().GetMechanism()))
			for _, m := range request.GetMechanismPreferences() {
				short(validate.Mechanism(m))
			}
			short(validate.IPContext(request.GetConnection().GetContext().GetIpContext()))
			short(validate.ConnectionLimits(request.GetConnection()))
			short(validate.MonitorScopeSelector(&networkservice.MonitorScopeSelector{PathSegments: request.GetConnection().GetPath().GetPathSegments()}))
		}
		ns := new(registry.NetworkService)
		if proto.Unmarshal(data, ns) == nil {
			short(validate.NetworkService(ns))
			short(validate.NetworkServiceQuery(&registry.NetworkServiceQuery{NetworkService: ns}))
		}
		nse := new(registry.NetworkServiceEndpoint)
		if proto.Unmarshal(data, nse) == nil {
			short(validate.NetworkServiceEndpoint(nse))
			short(validate.NetworkServiceEndpointQuery(&registry.NetworkServiceEndpointQuery{NetworkServiceEndpoint: nse}))
		}
	})
}
