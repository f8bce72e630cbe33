package clientinfo_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(vars map[string]string) clientinfo.Option {
	return clientinfo.WithGetenv(func(k string) string { return vars[k] })
}

func TestLabels(t *testing.T) {
	full := map[string]string{"NODE_NAME": "node-1", "POD_NAME": "nsc-7d9f", "CLUSTER_NAME": "east", "OTHER": "x"}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		labels map[string]string
		want   map[string]string
	}{
		{"all three into no labels", full, nil, map[string]string{"nodeName": "node-1", "podName": "nsc-7d9f", "clusterName": "east"}},
		{"added beside other labels", full, map[string]string{"app": "web"}, map[string]string{"app": "web", "nodeName": "node-1", "podName": "nsc-7d9f", "clusterName": "east"}},
		{"existing labels are not overwritten", full, map[string]string{"nodeName": "set-by-client", "podName": ""}, map[string]string{"nodeName": "set-by-client", "podName": "", "clusterName": "east"}},
		{"unset and empty variables add nothing", map[string]string{"NODE_NAME": "node-1", "POD_NAME": ""}, map[string]string{"app": "web"}, map[string]string{"app": "web", "nodeName": "node-1"}},
		{"empty environment", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for side, elem := range map[string]networkservice.NetworkServiceServer{
				"server": clientinfo.NewServer(env(tc.env)),
				"client": adapters.NewClientToServer(clientinfo.NewClient(env(tc.env))),
			} {
				t.Run(side, func(t *testing.T) {
					var labels map[string]string
					if tc.labels != nil {
						labels = map[string]string{}
						for k, v := range tc.labels {
							labels[k] = v
						}
					}
					s := chain.NewNetworkServiceServer(elem)
					conn, err := s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", Labels: labels}})
					require.NoError(t, err)
					require.Equal(t, tc.want, conn.GetLabels())
					conn, err = s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: conn})
					require.NoError(t, err)
					require.Equal(t, tc.want, conn.GetLabels(), "a refresh changes nothing")
					_, err = s.Close(context.Background(), conn)
					require.NoError(t, err)
				})
			}
		})
	}
}

func TestEnvironmentIsReadOnce(t *testing.T) {
	vars := map[string]string{"NODE_NAME": "node-1"}
	reads := 0
	s := clientinfo.NewServer(clientinfo.WithGetenv(func(k string) string { reads++; return vars[k] }))
	vars["NODE_NAME"] = "node-2"
	for range 3 {
		conn, err := s.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
		require.NoError(t, err)
		require.Equal(t, "node-1", conn.GetLabels()["nodeName"])
	}
	require.Equal(t, 3, reads, "one read per variable, at construction")
}
