//go:build tools

// Package kube pins the Kubernetes programs vwire's tests run (a real kube-apiserver, and in a
// cluster the rest of the control plane and node). It is a module of its own, outside go.work,
// so Kubernetes' dependency graph never reaches vwire's modules: build it with GOWORK=off.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
