package pathseg_test

import (
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/api/pathseg"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIndex(t *testing.T) {
	path := &networkservice.Path{PathSegments: []*networkservice.PathSegment{
		{Name: "nsc"}, {Name: "nsmgr"}, {Name: "forwarder"}, {Name: "nsmgr"},
	}}
	tests := []struct {
		name string
		path *networkservice.Path
		want int
	}{
		{name: "nsc", path: path, want: 0},
		{name: "forwarder", path: path, want: 2},
		{name: "nsmgr", path: path, want: 1},
		{name: "nse", path: path, want: -1},
		{name: "nsc", path: nil, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, pathseg.Index(tt.path, tt.name))
		})
	}
}
