# residency — see README.md.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEV_ENV     := $(or $(RESIDENCY_DEV_DIR),/tmp/residency-dev)/env
# The image's version (`residency version`) and name, for `make image`.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE       ?= residency:$(VERSION)
# Test flags; e.g. `make test TESTFLAGS='-run TestRouter -count=1'`.
TESTFLAGS   ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: test
test: ## start the dev stack, vet and run every test against the real services (the residency module, then deploy/check), stop the stack
	@deploy/dev/up >/dev/null || { deploy/dev/down; exit 1; }
	@status=0; \
	( set -a; . "$(DEV_ENV)"; set +a; \
	  $(GO) vet ./... && (cd deploy/check && $(GO) vet ./...) && \
	  { s=0; \
	    $(GO) test -race -shuffle=on -timeout 30m -json $(TESTFLAGS) ./... || s=$$?; \
	    (cd deploy/check && $(GO) test -shuffle=on -timeout 20m -json $(TESTFLAGS) ./...) || s=$$?; \
	    exit $$s; } | $(GO) run ./internal/tools/testreport -show '^TestSmoke' $(if $(CI),-no-skip) \
	) || status=$$?; \
	deploy/dev/down; exit $$status

.PHONY: test-deploy
test-deploy: ## run deploy/check (Dockerfile, manifests, alerts, dashboard) against a running dev stack (make up)
	@set -a; . "$(DEV_ENV)"; set +a; cd deploy/check && $(GO) test -count=1 -timeout 20m $(TESTFLAGS) ./...

.PHONY: test-short
test-short: ## run the quick tests with the embedded stand-ins, no services
	$(GO) test -short ./...

.PHONY: up
up: ## start the dev stack (Kafka ×2, Redis ×4, PostgreSQL, S3, schema registry) and leave it running
	@deploy/dev/up

.PHONY: down
down: ## stop the dev stack and remove its data
	@deploy/dev/down

.PHONY: lint
lint: ## gofmt check, go vet (also for 32-bit linux/386, darwin and windows), staticcheck (the residency module and deploy/check)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOARCH=386 $(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd deploy/check && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...

.PHONY: demo
demo: ## run the demo on the embedded stack
	$(GO) run ./cmd/residency demo

.PHONY: build
build: ## build bin/residency (the version and commit stamped)
	$(GO) build -ldflags="-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/residency ./cmd/residency

.PHONY: image
image: ## build the container image residency:VERSION from the Dockerfile (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .
