SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
PYTEST_ARGS ?=

##@ General

help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Run

deps: ## Install RabbitMQ (Debian package) and the Python package with its test extras
	bash scripts/install-deps.sh

demo: deps ## Run the shop pipeline on a private RabbitMQ, kill a worker midway, account for every order
	$(PYTHON) -m warren demo

##@ Verify

test: deps ## Run every test against a real RabbitMQ that the tests start themselves
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit: ## Run the unit tests only (no broker)
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

bench: deps ## Benchmark throughput: Warren vs raw pika vs Celery, on one private broker
	$(PYTHON) -m bench.throughput

.PHONY: help deps demo test unit bench
