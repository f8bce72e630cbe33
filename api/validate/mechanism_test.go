package validate_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/common"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/ipsec"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/memif"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/noop"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/srv6"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vfio"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/stretchr/testify/require"

	"vwire.dev/api/validate"
)

func mech(class, typ string, params ...string) *networkservice.Mechanism {
	m := &networkservice.Mechanism{Cls: class, Type: typ, Parameters: map[string]string{}}
	for i := 0; i+1 < len(params); i += 2 {
		m.Parameters[params[i]] = params[i+1]
	}
	return m
}

func TestMechanism(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	shortKey := base64.StdEncoding.EncodeToString(make([]byte, 31))
	param := func(key string) string { return `mechanism.parameters["` + key + `"]` }

	tests := []struct {
		name string
		m    *networkservice.Mechanism
		// field named by the error of MechanismPreference and of Mechanism; empty when valid
		preferenceField, negotiatedField string
	}{
		{name: "kernel", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, "nsm-1", kernel.NetNSURL, "inode://4/4026531992", common.MTU, "1446")},
		{name: "kernel preference", m: mech(cls.LOCAL, kernel.MECHANISM), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "kernel empty name", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, ""), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "memif", m: mech(cls.LOCAL, memif.MECHANISM, memif.SocketFileURL, "file:///run/memif.sock")},
		{name: "vfio", m: mech(cls.LOCAL, vfio.MECHANISM, vfio.IommuGroupKey, "3")},
		{name: "noop local", m: mech(cls.LOCAL, noop.MECHANISM)},
		{name: "noop remote", m: mech(cls.REMOTE, noop.MECHANISM)},
		{name: "vxlan", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.VNI, "16777215", vxlan.SrcIP, "192.0.2.1", vxlan.DstIP, "fd00::1", vxlan.SrcPort, "4789", vxlan.DstPort, "65535")},
		{name: "vxlan preference", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.SrcIP, "192.0.2.1"), negotiatedField: param(vxlan.VNI)},
		{name: "wireguard", m: mech(cls.REMOTE, wireguard.MECHANISM, wireguard.SrcPublicKey, key, wireguard.DstPublicKey, key)},
		{name: "wireguard preference", m: mech(cls.REMOTE, wireguard.MECHANISM), negotiatedField: param(wireguard.SrcPublicKey)},
		{name: "vlan", m: mech(cls.REMOTE, vlan.MECHANISM, vlan.ID, "4094")},
		{name: "vlan preference", m: mech(cls.REMOTE, vlan.MECHANISM), negotiatedField: param(vlan.ID)},
		{name: "srv6", m: mech(cls.REMOTE, srv6.MECHANISM, srv6.SrcHostIP, "anything")},
		{name: "ipsec key is not wireguard's", m: mech(cls.REMOTE, ipsec.MECHANISM, ipsec.SrcPublicKey, "-----BEGIN")},
		{name: "unknown parameter", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, "nsm-1", "future", "?")},

		{name: "nil", preferenceField: "mechanism", negotiatedField: "mechanism"},
		{name: "no cls", m: mech("", kernel.MECHANISM), preferenceField: "mechanism.cls", negotiatedField: "mechanism.cls"},
		{name: "lower-case cls", m: mech("local", kernel.MECHANISM), preferenceField: "mechanism.cls", negotiatedField: "mechanism.cls"},
		{name: "unknown type", m: mech(cls.LOCAL, "FOO"), preferenceField: "mechanism.type", negotiatedField: "mechanism.type"},
		{name: "lower-case type", m: mech(cls.LOCAL, "kernel"), preferenceField: "mechanism.type", negotiatedField: "mechanism.type"},
		{name: "kernel remote", m: mech(cls.REMOTE, kernel.MECHANISM), preferenceField: "mechanism.cls", negotiatedField: "mechanism.cls"},
		{name: "vxlan local", m: mech(cls.LOCAL, vxlan.MECHANISM), preferenceField: "mechanism.cls", negotiatedField: "mechanism.cls"},
		{name: "kernel name too long", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, strings.Repeat("n", 16)),
			preferenceField: param(kernel.InterfaceNameKey), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "kernel name slash", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, "a/b"),
			preferenceField: param(kernel.InterfaceNameKey), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "kernel name space", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, "a b"),
			preferenceField: param(kernel.InterfaceNameKey), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "kernel name dot dot", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.InterfaceNameKey, ".."),
			preferenceField: param(kernel.InterfaceNameKey), negotiatedField: param(kernel.InterfaceNameKey)},
		{name: "netns http url", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.NetNSURL, "http://x/ns"),
			preferenceField: param(kernel.NetNSURL), negotiatedField: param(kernel.NetNSURL)},
		{name: "netns bad inode url", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.NetNSURL, "inode://4/x"),
			preferenceField: param(kernel.NetNSURL), negotiatedField: param(kernel.NetNSURL)},
		{name: "netns file url without path", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.NetNSURL, "file://"),
			preferenceField: param(kernel.NetNSURL), negotiatedField: param(kernel.NetNSURL)},
		{name: "netns inode number", m: mech(cls.LOCAL, kernel.MECHANISM, kernel.NetNSInodeKey, "-1"),
			preferenceField: param(kernel.NetNSInodeKey), negotiatedField: param(kernel.NetNSInodeKey)},
		{name: "mtu zero", m: mech(cls.LOCAL, memif.MECHANISM, common.MTU, "0"),
			preferenceField: param(common.MTU), negotiatedField: param(common.MTU)},
		{name: "mtu not a number", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.MTU, "1500b"),
			preferenceField: param(common.MTU), negotiatedField: param(common.MTU)},
		{name: "vni zero", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.VNI, "0"),
			preferenceField: param(vxlan.VNI), negotiatedField: param(vxlan.VNI)},
		{name: "vni too big", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.VNI, "16777216"),
			preferenceField: param(vxlan.VNI), negotiatedField: param(vxlan.VNI)},
		{name: "vxlan bad dst ip", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.DstIP, "192.0.2.1/32"),
			preferenceField: param(vxlan.DstIP), negotiatedField: param(vxlan.DstIP)},
		{name: "vxlan port zero", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.SrcPort, "0"),
			preferenceField: param(vxlan.SrcPort), negotiatedField: param(vxlan.SrcPort)},
		{name: "vxlan port too big", m: mech(cls.REMOTE, vxlan.MECHANISM, vxlan.DstPort, "65536"),
			preferenceField: param(vxlan.DstPort), negotiatedField: param(vxlan.DstPort)},
		{name: "wireguard short key", m: mech(cls.REMOTE, wireguard.MECHANISM, wireguard.SrcPublicKey, shortKey),
			preferenceField: param(wireguard.SrcPublicKey), negotiatedField: param(wireguard.SrcPublicKey)},
		{name: "wireguard dst key not base64", m: mech(cls.REMOTE, wireguard.MECHANISM, wireguard.SrcPublicKey, key, wireguard.DstPublicKey, "!"),
			preferenceField: param(wireguard.DstPublicKey), negotiatedField: param(wireguard.DstPublicKey)},
		{name: "wireguard bad orig ip", m: mech(cls.REMOTE, wireguard.MECHANISM, common.SrcOriginalIP, "x"),
			preferenceField: param(common.SrcOriginalIP), negotiatedField: param(common.SrcOriginalIP)},
		{name: "vlan zero", m: mech(cls.REMOTE, vlan.MECHANISM, vlan.ID, "0"),
			preferenceField: param(vlan.ID), negotiatedField: param(vlan.ID)},
		{name: "vlan 4095", m: mech(cls.REMOTE, vlan.MECHANISM, vlan.ID, "4095"),
			preferenceField: param(vlan.ID), negotiatedField: param(vlan.ID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireField(t, tt.preferenceField, validate.MechanismPreference(tt.m))
			requireField(t, tt.negotiatedField, validate.Mechanism(tt.m))
		})
	}
}

func TestUnknownMechanismListsKnown(t *testing.T) {
	err := validate.MechanismPreference(mech(cls.LOCAL, "FOO"))
	require.EqualError(t, err, `mechanism.type: unknown mechanism type "FOO"; known: KERNEL, MEMIF, VFIO, NOOP, VXLAN, WIREGUARD, VLAN, SRV6, IPSEC`)
}
