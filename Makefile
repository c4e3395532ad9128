# Entry points for people and CI. The control plane (etcd, kube-apiserver,
# kube-controller-manager) and the real node (kubelet, kube-scheduler, kube-proxy,
# CoreDNS, CNI plugins, pause and busybox images) are built from source once per pin and
# cached in ~/.cache/octopus-operator (override: OCTOPUS_OPERATOR_CACHE); see
# e2e/controlplane/. OCTOPUS_OPERATOR_NODE=1 adds the real node to the control plane.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CONTROLPLANE := e2e/controlplane
TOOLS := e2e/tools

.PHONY: render-charts build crds test e2e e2e-real cluster-up cluster-down node-test host-state tools demo bench trials lint helm image argocd-health

## build: compile every crate, tests included
build:
	$(CARGO) build --workspace --all-targets

## image: the operator image, built without a container daemon or registry: a static (musl)
## release binary and a CA bundle in an OCI archive, target/image/octopus-operator-<version>.tar,
## reproducible from the last commit (prints its digest). Load it with
## `ctr -n k8s.io images import FILE` or `docker load -i FILE` (see operator/image/README.md)
image:
	operator/image/build.sh

## argocd-health: run the Argo CD health check's test cases with Argo CD's own Lua code
argocd-health:
	$$(e2e/argocd-health/build.sh) charts/octopus-operator/argocd/octopusoperator.dev/OctopusCluster

## crds: regenerate crds/ from the Rust types
crds:
	$(CARGO) run --quiet -p octopus-operator -- crd > crds/octopusclusters.yaml.tmp
	mv crds/octopusclusters.yaml.tmp crds/octopusclusters.yaml
	$(MAKE) --no-print-directory render-charts

## render-charts: refresh the chart's CRD copy and charts/install.yaml
render-charts:
	HELM=$$($(TOOLS)/install-helm.sh) charts/render-install.sh

## test: lint, unit tests and the e2e scenarios against a real control plane
## (the upgrade scenarios in the played world; the real-node tests, the chart's Deployment
## and the demo on the real node; the scenarios on the real node: `make e2e-real`)
test: cluster-up tools lint
	OCTOPUS_E2E_WORLD=played $(CARGO) test --workspace

## e2e-real: the upgrade scenarios (operator.rs, evictions.rs, stale_nodes.rs) on the real
## node, one at a time (slow: about 20 minutes; not yet stable enough for CI, see README)
e2e-real: cluster-up tools
	OCTOPUS_E2E_WORLD=real $(CARGO) test -p octopus-e2e --test operator --test evictions --test stale_nodes -- --test-threads=1

## e2e: only the e2e scenarios
e2e: cluster-up tools
	$(CARGO) test -p octopus-e2e

## cluster-up: build (first time: long) and start the control plane; prints its kubeconfig
cluster-up:
	$(CONTROLPLANE)/build.sh
	$(CONTROLPLANE)/up.sh

## cluster-down: stop the control plane (and its node) and give the host back
cluster-down:
	$(CONTROLPLANE)/down.sh

## host-state: what a real node changes on the host (sysctls, host iptables chains, netns,
## links, mounts, cgroups), this control plane's and leaked ones only; run it before
## `make cluster-up` and after `make cluster-down`: the two printouts must be equal
host-state:
	$(CONTROLPLANE)/host-state.sh

## node-test: the control plane with its real node, the node's smoke scenario, and
## Octopus Server nodes as real pods (e2e/tests/real_nodes.rs)
node-test: tools
	$(CONTROLPLANE)/build.sh
	OCTOPUS_OPERATOR_NODE=1 $(CONTROLPLANE)/up.sh
	OCTOPUS_OPERATOR_NODE=1 $(CARGO) test -p octopus-e2e --test node --test real_nodes

## tools: a kubectl matching the control plane (the harness prefers it) and helm
tools:
	$(TOOLS)/install-kubectl.sh >/dev/null
	$(TOOLS)/install-helm.sh >/dev/null

## demo: a live upgrade on the local control plane (about 2 minutes): the operator and the
## Octopus twin create a 3-node cluster on 2024.1.100, roll it to 2024.1.200, then, once
## approved, take it stop-the-world to 2024.2.50 (DEMO_NONINTERACTIVE=1: plain lines)
demo: cluster-up tools
	e2e/demo/demo.sh

## bench: release build, then upgrade timings, reconcile figures and operator memory
## against the control plane and the twin (prints figures; about 5 minutes)
bench:
	$(TOOLS)/install-kubectl.sh >/dev/null
	$(CARGO) build --release -p octopus-operator --bin octopus-operator
	OCTOPUS_E2E_WORLD=$${OCTOPUS_E2E_WORLD:-played} $(CARGO) bench -p octopus-e2e --bench operator

## trials: reliability trials counted in figures (about 15 minutes; not in `make test` or
## CI): at least 50 SIGKILLs of the operator process mid-upgrade (one replica, and the
## leader of two), kube-apiserver restarted mid-upgrade, Octopus answering 500s, dropping
## connections or refusing the API key; the twin's log judged by the shared invariants and
## logs, Events and status scanned for secrets. Each trial prints its seed:
## TRIALS_SEED=<kind>:<seed> replays one, TRIALS_SEED=<seed> the whole run. It restarts
## its API server, so it runs on a control plane of its own (OCTOPUS_OPERATOR_CLUSTER,
## default "trials"; `OCTOPUS_OPERATOR_CLUSTER=trials make cluster-down` stops it)
trials: tools
	$(CONTROLPLANE)/build.sh
	export OCTOPUS_OPERATOR_CLUSTER=$${OCTOPUS_OPERATOR_CLUSTER:-trials}; \
	$(CONTROLPLANE)/up.sh >/dev/null; \
	$(CARGO) build -p octopus-operator --bin octopus-operator; \
	$(CARGO) test -p octopus-e2e --test trials

## lint: formatting, clippy with warnings as errors, shellcheck when installed
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@if command -v shellcheck >/dev/null; then \
	  shellcheck -x $(CONTROLPLANE)/*.sh e2e/demo/*.sh $(TOOLS)/*.sh operator/image/*.sh e2e/argocd-health/*.sh .ci/run && echo "shellcheck: clean"; \
	else echo "shellcheck not installed: skipped"; fi

## helm: install helm and lint the charts in charts/
helm:
	@helm=$$($(TOOLS)/install-helm.sh); \
	for chart in charts/*/; do \
	  [[ -f $$chart/Chart.yaml ]] || continue; \
	  $$helm lint --strict $$chart; \
	done
