SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
PYTEST_ARGS ?=

##@ General

help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Run

deps: ## Install RabbitMQ (Debian package), the Python dependencies uv.lock pins (with hashes) and warren, editable
	PYTHON='$(PYTHON)' bash scripts/install-deps.sh

lock: ## Re-lock: write uv.lock from pyproject.toml (after changing a dependency; commit both)
	PYTHON='$(PYTHON)' bash scripts/install-deps.sh uv
	$(PYTHON) -m uv lock

demo: deps ## Run the shop pipeline on a private RabbitMQ, kill a worker midway, account for every order
	$(PYTHON) -m warren_shop demo

##@ Verify

test: deps images ## Run every test: a real RabbitMQ the tests start themselves, real worker processes and containers
	$(PYTHON) -m pytest $(PYTEST_ARGS)

chaos: deps images ## Run the chaos scenarios on every platform (processes, Docker containers)
	$(PYTHON) -m pytest -m chaos tests/chaos $(PYTEST_ARGS)

unit: ## Run the unit tests only (no broker)
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

store: deps ## Run the shop's store tests, each on SQLite and on a private PostgreSQL the tests start
	$(PYTHON) -m pytest tests/store $(PYTEST_ARGS)

lint: deps ## Check that uv.lock is up to date with pyproject.toml, then ruff
	$(PYTHON) -m uv lock --check
	$(PYTHON) -m ruff check src operator tests bench

typecheck: deps ## Type-check with mypy (configured in pyproject.toml)
	$(PYTHON) -m mypy

bench: deps ## Benchmark throughput: Warren vs raw pika vs Celery, on one private broker
	$(PYTHON) -m bench.throughput

bench-latency: deps ## Benchmark latency at a fixed rate (p50/p95/p99): Warren vs raw pika vs Celery, on one private broker
	$(PYTHON) -m bench.latency

bench-cluster: deps images ## The price of replication: throughput and publish-confirm latency on 1 node against 3 (Docker)
	$(PYTHON) -m bench.cluster

bench-store: deps ## Benchmark the shop's store: orders/s through the whole pipeline and round trips per order, SQLite vs PostgreSQL
	$(PYTHON) -m bench.store

bench-autoscale: deps ## Simulate a traffic spike: Warren's autoscaling policy vs KEDA's defaults (table + PNG)
	$(PYTHON) -m bench.autoscale

##@ Kubernetes

KIND_CLUSTER ?= warren
NAMESPACE ?= warren
HELM_ARGS ?=
# The oldest tool versions `make dev`, `make deploy` and `make e2e` accept (scripts/check-tools.sh):
# skaffold.yaml is skaffold/v4beta13; Helm 4 works too (docs/kubernetes.md, server-side apply).
HELM_VERSION ?= 3.14.0
SKAFFOLD_VERSION ?= 2.16.0
KIND_VERSION ?= 0.23.0
export HELM_VERSION SKAFFOLD_VERSION KIND_VERSION

kind-cluster: ## Create the kind cluster KIND_CLUSTER (a control plane and 3 workers: deploy/kind.yaml) unless it exists
	bash scripts/check-tools.sh kind
	kind get clusters | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name '$(KIND_CLUSTER)' --config deploy/kind.yaml

dev: kind-cluster ## `skaffold dev` on the kind cluster: build, deploy, rebuild and redeploy on change
	bash scripts/check-tools.sh helm skaffold
	skaffold dev --kube-context 'kind-$(KIND_CLUSTER)'

deploy: ## `helm upgrade --install` the chart into NAMESPACE on the current cluster (HELM_ARGS adds flags)
	bash scripts/check-tools.sh helm
	helm upgrade --install warren charts/warren --namespace '$(NAMESPACE)' --create-namespace --wait $(HELM_ARGS)

crds: ## Apply the chart's CRDs to the current cluster: Helm installs crds/ once and never upgrades them
	kubectl apply --server-side -f charts/warren/crds/

e2e: deps images kind-cluster ## On the kind cluster: install the chart, `helm test`, uninstall, and every chaos scenario with pods
	bash scripts/check-tools.sh helm
	kind load docker-image 'warren-worker:$(IMAGE_TAG)' 'warren-api:$(IMAGE_TAG)' 'warren-operator:$(IMAGE_TAG)' --name '$(KIND_CLUSTER)'
	$(PYTHON) -m pytest -m kind tests/e2e tests/chaos $(PYTEST_ARGS)

##@ Containers

IMAGE_TAG ?= dev
# Base of the Python images. Empty: build warren-base:bookworm from Debian packages (debootstrap)
# and use it for every image, pulling nothing. With a registry: BASE_IMAGE=python:3.11-slim-bookworm.
BASE_IMAGE ?=
# The broker the container tests run: built here unless set, e.g. to rabbitmq:3.13-management.
RABBITMQ_IMAGE ?= warren-rabbitmq:$(IMAGE_TAG)
export IMAGE_TAG BASE_IMAGE RABBITMQ_IMAGE

docker: ## Install Docker and debootstrap if missing; start dockerd unless it answers
	bash scripts/docker.sh ensure

images: docker ## Build warren-worker, warren-api, warren-operator, warren-rabbitmq (tag IMAGE_TAG); pulls nothing unless BASE_IMAGE is set
	bash scripts/docker.sh images

lint-images: ## Lint every Dockerfile with hadolint (fails on any warning)
	bash scripts/docker.sh lint

test-images: images ## Test the images: non-root, read-only root filesystem, graceful docker stop, hadolint
	$(PYTHON) -m pytest -m docker tests/images $(PYTEST_ARGS)

.PHONY: help deps lock demo test chaos unit store lint typecheck bench bench-latency bench-cluster bench-store bench-autoscale kind-cluster dev deploy crds e2e docker images lint-images test-images
