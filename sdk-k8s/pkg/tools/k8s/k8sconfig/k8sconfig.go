// Package k8sconfig holds the envconfig types of Kubernetes values that vwire's Kubernetes cmds
// read from the environment, so that each is checked at start the same way, with a message that
// says what is wrong, before anything reaches the API server.
package k8sconfig

import (
	"errors"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Namespace is a Kubernetes namespace name (a DNS-1123 label).
type Namespace string

// Decode implements envconfig's Decoder.
func (n *Namespace) Decode(value string) error {
	if problems := validation.IsDNS1123Label(value); len(problems) > 0 {
		return errors.New("not a namespace name: " + strings.Join(problems, "; "))
	}
	*n = Namespace(value)
	return nil
}

// TypeName names the type in a cmd's --help.
func (Namespace) TypeName() string { return "namespace" }
