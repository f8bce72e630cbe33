//go:build tools

// Package kube pins the Kubernetes programs vwire's tests run: a real kube-apiserver, and for the
// single-node cluster of integration-tests/cluster the rest of the control plane, the node agent,
// kube-proxy and kubectl. It is a module of its own, outside go.work, so Kubernetes' dependency
// graph never reaches vwire's modules: build it with GOWORK=off.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
