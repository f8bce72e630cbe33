// Package crd makes the CustomResourceDefinitions of NSM's registry resources
// (apis/networkservicemesh.io/v1) from their Go types, so that the manifests a cluster installs
// never drift from the code that reads and writes the objects.
//
// The definitions keep NSM's facts (names, short names nse/netsvc, namespaced scope, one
// version v1 served and stored) and give the spec an OpenAPI schema made by walking the
// record's Go type as encoding/json writes it, so that kubectl explain knows the fields and the
// API server refuses a field of the wrong type. Fields the schema does not know are kept
// (x-kubernetes-preserve-unknown-fields), as NSM's schema-less definitions keep them: objects
// written by a newer NSM survive. `go generate` (gen) writes the manifests into the repository;
// a test fails when the checked-in files differ from what Manifests makes now.
package crd

//go:generate go run ./gen

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/networkservicemesh/api/pkg/api/registry"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	v1 "vwire.dev/sdk-k8s/pkg/tools/k8s/apis/networkservicemesh.io/v1"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// Dirs are the folders, relative to this package's, that hold the generated manifests: the
// module's own and the registry's kustomize base in deployments-k8s.
var Dirs = []string{"../../../../deployments/crds", "../../../../../deployments-k8s/apps/registry-k8s"}

// Manifests returns the YAML manifest of each definition by file name, as NSM names the files.
func Manifests() (map[string][]byte, error) {
	out := map[string][]byte{}
	for file, crd := range map[string]*apiextensionsv1.CustomResourceDefinition{
		"crd-ns.yaml":  definition[*registry.NetworkService]("netsvc", "netsvcs"),
		"crd-nse.yaml": definition[*registry.NetworkServiceEndpoint]("nse", "nses"),
	} {
		y, err := manifest(crd)
		if err != nil {
			return nil, fmt.Errorf("crd: %s: %w", file, err)
		}
		out[file] = y
	}
	return out, nil
}

func definition[R next.Record](shortNames ...string) *apiextensionsv1.CustomResourceDefinition {
	kind, plural := v1.Kind[R](), v1.Resource[R]()
	spec := schemaOf(reflect.TypeFor[R]())
	spec.XPreserveUnknownFields = ptr(true)
	return &apiextensionsv1.CustomResourceDefinition{
		TypeMeta:   metav1.TypeMeta{APIVersion: apiextensionsv1.SchemeGroupVersion.String(), Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + v1.GroupName},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: v1.GroupName,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind), ShortNames: shortNames,
			},
			Scope:      apiextensionsv1.NamespaceScoped,
			Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: v1.SchemeGroupVersion.Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Description: fmt.Sprintf("A %s of NSM's registry; spec is its registry record (github.com/networkservicemesh/api/pkg/api/registry).", kind),
					Type:        "object",
					Properties:  map[string]apiextensionsv1.JSONSchemaProps{"spec": spec},
				}},
			}},
		},
	}
}

// schemaOf returns the schema of t as encoding/json writes it; the records hold strings,
// booleans, integers, lists, maps with string keys and messages only.
func schemaOf(t reflect.Type) apiextensionsv1.JSONSchemaProps {
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.String:
		return apiextensionsv1.JSONSchemaProps{Type: "string"}
	case reflect.Bool:
		return apiextensionsv1.JSONSchemaProps{Type: "boolean"}
	case reflect.Int32, reflect.Uint32:
		return apiextensionsv1.JSONSchemaProps{Type: "integer", Format: "int32"}
	case reflect.Int64:
		return apiextensionsv1.JSONSchemaProps{Type: "integer", Format: "int64"}
	case reflect.Slice:
		items := schemaOf(t.Elem())
		return apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &items}}
	case reflect.Map:
		values := schemaOf(t.Elem())
		return apiextensionsv1.JSONSchemaProps{Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &values}}
	case reflect.Struct:
		s := apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{}}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue // the message's internal state, or a oneof wrapper (the records have none)
			}
			s.Properties[name] = schemaOf(f.Type)
		}
		return s
	}
	panic(fmt.Sprintf("crd: no schema for Go type %s; teach schemaOf its JSON form", t))
}

// manifest is crd as YAML without the fields a manifest leaves to the API server.
func manifest(crd *apiextensionsv1.CustomResourceDefinition) ([]byte, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(crd)
	if err != nil {
		return nil, err
	}
	delete(u, "status")
	delete(u["metadata"].(map[string]any), "creationTimestamp")
	y, err := yaml.Marshal(u)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Generated by vwire.dev/sdk-k8s/pkg/tools/k8s/crd (go generate) from the Go types; do not edit.\n---\n"), y...), nil
}

func ptr[T any](v T) *T { return &v }
