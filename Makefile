# Every target works on the whole Go workspace (go.work): each module folder is listed there.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PACKAGES = $(shell $(GO) list -m -f '{{.Path}}/...')
FUZZTIME ?= 10s
BENCHTIME ?= 1s

.PHONY: all lint test bench fuzz demo demo-down kube-bins spire-bins jaeger-bin images cluster-bins cluster-up cluster-down examples

# Programs the tests run that are not ours (kube-apiserver, etcd), built from the Go module proxy
# into .build/bin (never in git). Each comes from a module of its own under tools/, outside
# go.work, so their dependency graphs never reach vwire's modules. A cold build takes about ten
# minutes on two cores; after that, seconds.
BUILD := $(CURDIR)/.build
export VWIRE_KUBE_BIN := $(BUILD)/bin

all: lint test

lint:
	@out=$$(gofmt -l $$($(GO) list -m -f '{{.Dir}}')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PACKAGES)
	$(GO) run $(STATICCHECK) $(PACKAGES)
	.ci/readme-tables
	$(GO) test -count=1 -run '^TestUpToDate$$' ./integration-tests/mdtest/suitegen

# -timeout: a cold first run builds every image and cluster image inside the tests on 2 cores.
# Then the examples of deployments-k8s on a real cluster, one suite at a time after the rest:
# only one cluster fits on a machine. The tests built with `!race` (a race inside a library, named
# in each file) run without the race detector.
test: kube-bins cluster-bins spire-bins jaeger-bin
	$(GO) test -race -count=1 -timeout 30m $(PACKAGES)
	$(GO) test -count=1 -run '^TestInteropWithNSMsNsmgr$$' ./sdk/pkg/networkservice/common/mechanisms/sendfd
	$(MAKE) examples

# The main job: a three-node mesh in network namespaces, every vWire topology pinged, then torn
# down (needs root and Go; installs iproute2 and ping when missing).
demo:
	deployments-k8s/local/mesh.sh demo

demo-down:
	deployments-k8s/local/mesh.sh down

# The Kubernetes programs say which release they are (kubectl version, the node's kubelet version).
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=v1.37.1 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37

kube-bins:
	@mkdir -p $(BUILD)/bin
	cd tools/etcd && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/etcd .
	cd tools/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -ldflags='$(KUBE_LDFLAGS)' -o $(BUILD)/bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver

# SPIRE's server and agent (tools/spire), the SPIFFE Workload API of integration-tests/spire and
# of the Kubernetes examples, and spire-controller-manager (tools/spire-controller-manager, no
# cgo, about 3 minutes cold), which registers the examples' pods. The server keeps its entries
# in SQLite, which needs cgo: both are linked statically (no C library needed at run time, so
# they go into images as they are), with Go's own resolver and user lookup and no SQLite
# extension loading, so nothing calls into glibc's dynamic parts. One build for both, so they
# share every compiled package; they say their release as SPIRE's own builds do. A cold build
# takes about 12 CPU-minutes (6 on two free cores).
SPIRE_TAGS := netgo,osusergo,sqlite_omit_load_extension
SPIRE_LDFLAGS := -s -w -X github.com/spiffe/spire/pkg/common/version.gittag=1.13.3 -linkmode external -extldflags "-static"
spire-bins:
	@mkdir -p $(BUILD)/bin
	cd tools/spire && GOWORK=off CGO_ENABLED=1 $(GO) build -tags $(SPIRE_TAGS) -ldflags='$(SPIRE_LDFLAGS)' \
	  -o $(BUILD)/bin/ github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
	cd tools/spire-controller-manager && GOWORK=off CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' \
	  -o $(BUILD)/bin/spire-controller-manager github.com/spiffe/spire-controller-manager/cmd

# Jaeger v2 (tools/jaeger, github.com/jaegertracing/jaeger v1.75.0's cmd/jaeger), the tracing
# backend integration-tests' TestTracingInJaeger runs; about 10 minutes cold on two cores.
jaeger-bin:
	@mkdir -p $(BUILD)/bin
	cd tools/jaeger && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

# The rest of a single-node cluster (integration-tests/cluster): control plane, kubelet,
# kube-proxy, kubectl, containerd and runc, the CNI plugins (in .build/bin/cni), CoreDNS and the
# pods' pause program; each wrapper module under tools/ is outside go.work. runc needs Debian's
# libseccomp-dev; kube-proxy and the cluster's teardown need nftables.
cluster-bins: kube-bins
	@[ -e /usr/include/seccomp.h ] && command -v nft >/dev/null && command -v iptables >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev nftables iptables; }
	cd tools/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -ldflags='$(KUBE_LDFLAGS)' -o $(BUILD)/bin/ k8s.io/kubernetes/cmd/kubelet \
	  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
	  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
	cd tools/containerd && GOWORK=off CGO_ENABLED=0 $(GO) build -tags no_btrfs -o $(BUILD)/bin/ \
	  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
	  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
	cd tools/runc && GOWORK=off CGO_ENABLED=1 $(GO) build -tags seccomp -o $(BUILD)/bin/runc github.com/opencontainers/runc
	@mkdir -p $(BUILD)/bin/cni
	cd tools/cni-plugins && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/cni/ \
	  github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/ipam/host-local \
	  github.com/containernetworking/plugins/plugins/main/loopback github.com/containernetworking/plugins/plugins/meta/portmap
	cd tools/coredns && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/coredns github.com/coredns/coredns
	CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/pause ./integration-tests/cluster/pause

# A cluster left running to use by hand (KUBECONFIG is printed; NODES=2 for two nodes);
# cluster-down removes it.
cluster-up: cluster-bins
	$(GO) run ./integration-tests/cluster/cmd/cluster $(if $(NODES),-nodes $(NODES)) up

cluster-down:
	$(GO) run ./integration-tests/cluster/cmd/cluster down

# One image per cmd, as docker-style tarballs in .build/images (images/README.md): named
# $(IMAGE_REPO)/<cmd>:<version>, the version `git describe --tags --always --dirty` unless
# VERSION is given; CMDS picks some by name (default: every cmd-* with a main package and the
# programs of spire-bins: spire-server, spire-agent, spire-controller-manager).
IMAGE_REPO ?= ghcr.io/vwire
images: spire-bins
	$(GO) run ./images -out $(BUILD)/images -repo $(IMAGE_REPO) -prebuilt $(BUILD)/bin $(if $(VERSION),-version $(VERSION)) $(CMDS)

# The examples of deployments-k8s run as tests (integration-tests/k8s, compiled from their
# READMEs by `go generate` in integration-tests, build tag k8sexamples): each suite starts a
# cluster of its own, so one suite at a time (-p 1); the images get the tag the manifests name.
# Not part of `make test` yet (integration-tests/README.md says why).
examples: VERSION := dev
examples: images cluster-bins
	$(GO) test -count=1 -p 1 -v -tags k8sexamples -timeout 60m ./integration-tests/k8s/...

bench: kube-bins cluster-bins
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) $(PACKAGES)

# A short run of every fuzz target: go test -fuzz takes one target in one package at a time.
fuzz:
	@set -e; for pkg in $(PACKAGES); do \
	  for dir in $$($(GO) list -f '{{.Dir}}' $$pkg); do \
	    for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	      echo "fuzz $$target in $$dir"; \
	      (cd $$dir && $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) .); \
	    done; \
	  done; \
	done
