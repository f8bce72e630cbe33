package supplier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"text/template/parse"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Template is a pod description with text/template references to the service and the node,
// checked when parsed.
type Template struct {
	file string // for messages
	tmpl *template.Template
}

// data is what a template is executed over. Labels holds nodeName only; it is there so that
// NSM's templates, written over the client's connection ({{ index .Labels "nodeName" }}), work
// unchanged.
type data struct {
	NetworkService string
	NodeName       string
	Labels         map[string]string
}

// Two nodes to try a template with: a name or node that does not change between them would
// put every endpoint in one pod.
var tryNodes = [2]string{"node-a", "node-b"}

// ParseTemplate parses the pod template text read from file (named in errors) and checks it
// for two nodes and service: it must give a v1 Pod with a container, in no other namespace than
// namespace, and a name and nodeName, when it sets them, that differ from node to node.
func ParseTemplate(file string, text []byte, service, namespace string) (*Template, error) {
	tmpl, err := template.New(file).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("pod template %s: %w", file, err)
	}
	if bad := notReference(tmpl.Root); bad != nil {
		return nil, fmt.Errorf("pod template %s: %s: only {{ .NetworkService }}, {{ .NodeName }} and {{ index .Labels \"nodeName\" }} may be used", file, bad)
	}
	t := &Template{file: file, tmpl: tmpl}
	var names [2]string
	for i, node := range tryNodes {
		pod, err := t.Pod(service, node)
		if err != nil {
			return nil, err
		}
		if ns := pod.GetNamespace(); ns != "" && ns != namespace {
			return nil, fmt.Errorf("pod template %s: metadata.namespace is %q, but the supplier makes pods in NSM_NAMESPACE=%s; leave it out", file, ns, namespace)
		}
		if pod.Spec.NodeName != node {
			return nil, fmt.Errorf("pod template %s: spec.nodeName is %q for a client on node %q; leave it out or write {{ .NodeName }}", file, pod.Spec.NodeName, node)
		}
		names[i] = pod.GetName()
	}
	if names[0] == names[1] {
		return nil, fmt.Errorf("pod template %s: metadata.name %q is the same on every node, so one pod would serve them all; put {{ .NodeName }} in it, or leave it out", file, names[0])
	}
	return t, nil
}

// Pod returns the pod of service for node: the template executed over them, with nodeName
// set, and the name the template gives or else PodName.
func (t *Template) Pod(service, node string) (*corev1.Pod, error) {
	var b bytes.Buffer
	if err := t.tmpl.Execute(&b, data{NetworkService: service, NodeName: node, Labels: map[string]string{"nodeName": node}}); err != nil {
		return nil, fmt.Errorf("pod template %s: %w; it may use .NetworkService, .NodeName and (as NSM's) index .Labels \"nodeName\"", t.file, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(b.Bytes(), &head); err != nil {
		return nil, fmt.Errorf("pod template %s: not YAML: %w", t.file, err)
	}
	if head.Kind != "Pod" || head.APIVersion != "v1" {
		return nil, fmt.Errorf("pod template %s: describes apiVersion %q kind %q; want apiVersion v1, kind Pod", t.file, head.APIVersion, head.Kind)
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(b.Bytes(), pod); err != nil {
		return nil, fmt.Errorf("pod template %s: not a pod: %w", t.file, err)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("pod template %s: spec.containers is empty; the pod must run the endpoint", t.file)
	}
	if pod.Spec.NodeName == "" {
		pod.Spec.NodeName = node
	}
	if pod.GetName() == "" {
		pod.SetName(PodName(service, node))
	}
	if problems := validation.IsDNS1123Subdomain(pod.GetName()); len(problems) > 0 {
		return nil, fmt.Errorf("pod template %s: metadata.name %q for node %q: %s", t.file, pod.GetName(), node, strings.Join(problems, "; "))
	}
	return pod, nil
}

// notReference returns the first node of the template that does more than refer to the data:
// a template that loops or calls may run without end or write without bound, and a pod
// template needs neither.
func notReference(root *parse.ListNode) parse.Node {
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode, *parse.CommentNode:
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || !reference(n.Pipe.Cmds[0].Args) {
				return n
			}
		default:
			return n
		}
	}
	return nil
}

// reference tells whether args are .Field or index .Labels "key".
func reference(args []parse.Node) bool {
	switch len(args) {
	case 1:
		field, ok := args[0].(*parse.FieldNode)
		return ok && len(field.Ident) == 1
	case 3:
		fn, ok := args[0].(*parse.IdentifierNode)
		labels, isField := args[1].(*parse.FieldNode)
		_, key := args[2].(*parse.StringNode)
		return ok && fn.Ident == "index" && isField && len(labels.Ident) == 1 && labels.Ident[0] == "Labels" && key
	}
	return false
}

// maxName keeps a derived name a valid hostname (a DNS label) as well as an object name.
const maxName = validation.DNS1123LabelMaxLength

var notInName = regexp.MustCompile(`[^a-z0-9-]+`)

// PodName is the name of the pod of service on node when the template gives none:
// <service>-<node>, lowercase, other characters made '-'; past 63 characters, cut, with a hash
// of the whole that keeps names of different nodes apart.
func PodName(service, node string) string {
	whole := service + "-" + node
	name := strings.Trim(notInName.ReplaceAllString(strings.ToLower(whole), "-"), "-")
	if len(name) <= maxName && name == strings.ToLower(whole) {
		return name
	}
	sum := sha256.Sum256([]byte(whole))
	suffix := hex.EncodeToString(sum[:])[:10]
	return strings.Trim(name[:min(len(name), maxName-len(suffix)-1)], "-") + "-" + suffix
}
