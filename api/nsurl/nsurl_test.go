package nsurl_test

import (
	"fmt"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/api/nsurl"
	"vwire.dev/api/validate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ExampleParse() {
	u, err := nsurl.Parse("kernel://vpn@corp.example/vpn0?app=web")
	if err != nil {
		fmt.Println(status.Code(err), err)
		return
	}
	request := &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{
			Id:             "conn-1",
			NetworkService: u.NetworkServiceName(),
			Labels:         u.Labels,
		},
		MechanismPreferences: []*networkservice.Mechanism{{
			Cls:        cls.LOCAL,
			Type:       u.Mechanism,
			Parameters: map[string]string{common.InterfaceNameKey: u.Interface},
		}},
	}
	fmt.Println(request.GetConnection().GetNetworkService(), u.Mechanism, u.Interface, validate.Request(request))

	_, err = nsurl.Parse("kernel://vpn@corp.example/vpn-interface-01")
	fmt.Println(status.Code(fmt.Errorf("nsc: %w", err)), err)
	// Output:
	// vpn@corp.example KERNEL vpn0 <nil>
	// InvalidArgument url path: interface name "vpn-interface-01" is 16 bytes, limit 15
}

func TestParse(t *testing.T) {
	tests := []struct {
		in        string
		want      *nsurl.URL
		canonical string // String() of the result, when it differs from in
		name      string // NetworkServiceName()
	}{
		{
			in:   "kernel://icmp-responder/nsm-1?app=web",
			want: &nsurl.URL{Mechanism: "KERNEL", NetworkService: "icmp-responder", Interface: "nsm-1", Labels: map[string]string{"app": "web"}},
			name: "icmp-responder",
		},
		{
			in:   "kernel://vpn@corp.example/vpn0",
			want: &nsurl.URL{Mechanism: "KERNEL", NetworkService: "vpn", Domain: "corp.example", Interface: "vpn0"},
			name: "vpn@corp.example",
		},
		{
			in:   "memif://icmp-responder",
			want: &nsurl.URL{Mechanism: "MEMIF", NetworkService: "icmp-responder"},
			name: "icmp-responder",
		},
		{
			in:        "KERNEL://ns/?z=1&a=&b=x+y",
			want:      &nsurl.URL{Mechanism: "KERNEL", NetworkService: "ns", Labels: map[string]string{"z": "1", "a": "", "b": "x y"}},
			canonical: "kernel://ns?a=&b=x+y&z=1",
			name:      "ns",
		},
		{
			in:        "vfio://sriov/nsm-%31",
			want:      &nsurl.URL{Mechanism: "VFIO", NetworkService: "sriov", Interface: "nsm-1"},
			canonical: "vfio://sriov/nsm-1",
			name:      "sriov",
		},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := nsurl.Parse(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.name, got.NetworkServiceName())

			canonical := tt.canonical
			if canonical == "" {
				canonical = tt.in
			}
			require.Equal(t, canonical, got.String())
			again, err := nsurl.Parse(got.String())
			require.NoError(t, err)
			require.Equal(t, got, again)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, field string
	}{
		{in: "kernel://ns/%zz", field: "url"},
		{in: "kernel:ns", field: "url"},
		{in: "kernel://ns/nsm-1#x", field: "url"},
		{in: "icmp-responder/nsm-1", field: "url scheme"},
		{in: "foo://ns", field: "url scheme"},
		{in: "vxlan://ns", field: "url scheme"},
		{in: "kernel:///nsm-1", field: "url host"},
		{in: "kernel://ns:5000/nsm-1", field: "url host"},
		{in: "kernel://ns@/nsm-1", field: "url host"},
		{in: "kernel://@corp/nsm-1", field: "url host"},
		{in: "kernel://vpn:secret@corp/nsm-1", field: "url host"},
		{in: "kernel://vpn@corp_example", field: "url host"},
		{in: "kernel://a%40b@corp", field: "url host"},
		{in: "kernel://ns/nsm-icmp-responder0", field: "url path"},
		{in: "kernel://ns/a/b", field: "url path"},
		{in: "kernel://ns/a%20b", field: "url path"},
		{in: "kernel://ns/..", field: "url path"},
		{in: "kernel://ns?a=1;b=2", field: "url query"},
		{in: "kernel://ns?=x", field: "url query"},
		{in: "kernel://ns?app=a&app=b", field: "url query"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := nsurl.Parse(tt.in)
			var verr *validate.Error
			require.ErrorAs(t, err, &verr)
			require.Equal(t, tt.field, verr.Field, "error: %v", err)
			require.Equal(t, codes.InvalidArgument, status.Code(fmt.Errorf("nsc: %w", err)))
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := nsurl.Parse("kernel://icmp-responder/nsm-icmp-responder0")
	require.EqualError(t, err, `url path: interface name "nsm-icmp-responder0" is 19 bytes, limit 15`)
	_, err = nsurl.Parse("vxlan://icmp-responder")
	require.EqualError(t, err, `url scheme: VXLAN is a REMOTE mechanism, not LOCAL`)
}

// FuzzParse checks that Parse never panics and that whatever it accepts prints back to a URL
// that parses to the same value.
func FuzzParse(f *testing.F) {
	f.Add("kernel://icmp-responder/nsm-1?app=web")
	f.Fuzz(func(t *testing.T, in string) {
		u, err := nsurl.Parse(in)
		if err != nil {
			return
		}
		again, err := nsurl.Parse(u.String())
		require.NoError(t, err, "String() = %q", u.String())
		require.Equal(t, u, again)
	})
}
