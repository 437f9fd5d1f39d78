# Tollgate. `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
USER  ?= alice

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/api, bin/worker and bin/alerter
	$(GO) build -o $(BIN)/ $(wildcard ./api ./worker ./alerter)

.PHONY: run
run: build ## start the whole system on this machine (embedded NATS, dev auth, sample corpus, offline model)
	./deployments/dev/run.sh

.PHONY: token
token: ## print a dev token: make token USER=alice
	@$(GO) run ./api token $(USER)

.PHONY: test
test: ## install what the tests need (weaviate-server in .tools/) and run every test
	./scripts/install-weaviate.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

.PHONY: lint
lint: ## vet and check formatting
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: bench
bench: ## run the benchmarks (figures in docs/*-bench.md)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

.PHONY: clean
clean: ## remove binaries and the local data directory
	rm -rf $(BIN) data
