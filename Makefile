# agentca — see README.md. Only Go is assumed; other tools are fetched here.
SHELL := /bin/bash
GO ?= go
BIN := bin/agentca
DATA ?= agentca-data
TRUST_DOMAIN ?= example.org
HTTPS ?= 127.0.0.1:8443
HTTP ?= 127.0.0.1:8080
GOBIN := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
GOVULNCHECK := $(GOBIN)/govulncheck

.PHONY: all build run test unit e2e lint fmt vet staticcheck govulncheck bench bench-smoke bench-etcd bench-compare fuzz tools deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/agentca

# run: build, create a demo CA in $(DATA) if there is none, serve it on
# loopback, and print how to enroll.
run: build
	@if [ ! -f $(DATA)/agentca.json ]; then \
		./$(BIN) init --dir $(DATA) --trust-domain $(TRUST_DOMAIN) --https $(HTTPS) --http $(HTTP); \
	fi
	@scripts/howto.sh $(BIN) $(DATA)
	exec ./$(BIN) serve --dir $(DATA)

# test: everything CI runs — lint, unit tests with the race detector,
# and the end-to-end tests against the real binary, openssl and zlint.
test: deps lint
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory bench-smoke

# bench-smoke runs every Go benchmark once (-benchtime=1x, big setups
# shrunk, -short skips the longest), so a broken benchmark fails make
# test. Every package with a Benchmark function is included.
BENCH_ALL = $(shell grep -rl --include='*_test.go' '^func Benchmark' . 2>/dev/null | xargs -r -n1 dirname | sort -u)
bench-smoke:
	$(GO) test -short -count=1 -run '^$$' -bench . -benchtime=1x $(BENCH_ALL)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test)

e2e: deps
	$(GO) test -race -count=1 -timeout 20m ./test/...

# deps installs the outside tools the tests drive (openssl, SoftHSM2 for
# the PKCS#11 test, nginx and haproxy for the relying-service tests) when
# absent.
deps:
	@command -v openssl >/dev/null 2>&1 || { \
		echo "installing openssl"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openssl; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq openssl; fi; }
	@{ command -v softhsm2-util >/dev/null 2>&1 && [ -e /usr/lib/softhsm/libsofthsm2.so ]; } || { \
		echo "installing softhsm2"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq softhsm2; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq softhsm2; fi; }
	@{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || { \
		echo "installing nginx"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; fi; }
	@{ command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || { \
		echo "installing haproxy"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; fi; }

lint: fmt vet staticcheck govulncheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

$(GOVULNCHECK):
	$(GO) install golang.org/x/vuln/cmd/govulncheck@v1.9.0

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

# govulncheck needs the Go vulnerability database; where it cannot be
# reached (an offline machine) the check says so and is skipped.
govulncheck: $(GOVULNCHECK)
	@out=$$($(GOVULNCHECK) ./... 2>&1); rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "govulncheck: no vulnerabilities"; \
	elif echo "$$out" | grep -qiE 'fetching vulnerabilities|dial tcp|no such host|connection refused|i/o timeout|TLS handshake'; then \
		echo "govulncheck: vulnerability database unreachable; skipped"; \
	else echo "$$out"; exit $$rc; fi

# bench: Go micro-benchmarks of the issuance core, the store and log,
# OCSP, CRL, proofs and attestation, then the load generator against a
# real daemon (see docs/benchmarks.md). About 4 minutes on 2 cores
# (-short skips the 1M-entry proof micro-benchmark: the big-store phase
# measures proofs at that size through the daemon).
BENCH_PKGS := ./ca/ ./store/... ./api/ ./ocsp/ ./crl/ ./translog/ ./provisioners/k8ssa/ ./policy/ ./nodeagent/ ./internal/logwriter/
bench: build
	$(GO) test -short -run '^$$' -bench . -benchmem -count 1 $(BENCH_PKGS)
	$(GO) run ./cmd/agentca-bench --binary $(BIN)

# bench-compare: the same load generator against agentca and step-ca
# (badger and bbolt), interleaved, three rounds (docs/benchmarks.md). It
# installs step-ca and the step CLI into bin/tools (step-ca's PC/SC
# support needs Debian's libpcsclite-dev to build). About 9 minutes.
STEP_VERSION ?= v0.30.2
TOOLS := $(CURDIR)/bin/tools
bench-compare: build
	@dpkg -s libpcsclite-dev >/dev/null 2>&1 || { \
		echo "installing libpcsclite-dev"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libpcsclite-dev; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq libpcsclite-dev; fi; }
	GOBIN=$(TOOLS) $(GO) install github.com/smallstep/certificates/cmd/step-ca@$(STEP_VERSION)
	GOBIN=$(TOOLS) $(GO) install github.com/smallstep/cli/cmd/step@$(STEP_VERSION)
	$(GO) run ./cmd/agentca-bench --binary $(BIN) --compare --step-ca $(TOOLS)/step-ca --step $(TOOLS)/step --rounds 3 --duration 10s

# bench-etcd: /v1/sign through two replicas on a 3-member etcd cluster
# started in the benchmark's process (docs/ha.md, docs/benchmarks.md).
bench-etcd: build
	$(GO) run ./cmd/agentca-bench --binary $(BIN) --storage etcd --concurrency 64

# fuzz runs every fuzz target for FUZZTIME (seeds in each package's
# testdata/fuzz; the seeds also run as ordinary tests in make test).
FUZZTIME ?= 30s
FUZZ_TARGETS := FuzzParseCSR:./ca/ FuzzDecodeSignRequest:./api/ FuzzOCSPHandler:./api/ \
	FuzzConfigParse:./internal/config/ FuzzRespond:./ocsp/ FuzzParseLeaf:./translog/ FuzzState:./translog/ \
	FuzzK8sAttest:./provisioners/k8ssa/ FuzzGCPAttest:./provisioners/gcpiit/ FuzzAzureMSIAttest:./provisioners/azuremsi/ \
	FuzzAWSAttest:./provisioners/awsiid/ FuzzAzureIMDSAttest:./provisioners/azureimds/ \
	FuzzParseTokenRequest:./api/ FuzzJWTSVIDRequest:./api/ FuzzParse:./policy/ FuzzAuthorization:./verify/oauth/ \
	FuzzReadBackup:./store/etcd/ FuzzRender:./workloads/ FuzzParseCgroup:./nodeagent/ \
	FuzzCompileCondition:./policy/ \
	FuzzParseBundle:./federation/ FuzzBundleQuery:./api/ \
	FuzzParseExchangeRequest:./api/ FuzzParseAct:./exchange/ FuzzValidate:./exchange/
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t%%:*} ($${t#*:})"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) "$${t#*:}"; \
	done

clean:
	rm -rf bin
