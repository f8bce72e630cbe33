# Every target works on the whole Go workspace (go.work): each module folder is listed there.
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PACKAGES = $(shell $(GO) list -m -f '{{.Path}}/...')
FUZZTIME ?= 10s
BENCHTIME ?= 1s

.PHONY: all lint test bench fuzz demo demo-down kube-bins images

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

test: kube-bins
	$(GO) test -race -count=1 $(PACKAGES)

# The main job: a two-node mesh in network namespaces, every vWire topology pinged, then torn
# down (needs root, iproute2 and ping).
demo:
	deployments-k8s/local/mesh.sh demo

demo-down:
	deployments-k8s/local/mesh.sh down

kube-bins:
	@mkdir -p $(BUILD)/bin
	cd tools/etcd && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/etcd .
	cd tools/kube && GOWORK=off CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver

# One image per cmd, as docker-style tarballs in .build/images (images/README.md): named
# $(IMAGE_REPO)/<cmd>:<version>, the version `git describe --tags --always --dirty` unless
# VERSION is given; CMDS picks some cmds by name (default: every cmd-* with a main package).
IMAGE_REPO ?= ghcr.io/vwire
images:
	$(GO) run ./images -out $(BUILD)/images -repo $(IMAGE_REPO) $(if $(VERSION),-version $(VERSION)) $(CMDS)

bench: kube-bins
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
