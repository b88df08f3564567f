# The single entry point for people and CI. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Both cores: the suite is mostly waiting on subprocesses, servers and I/O, so two workers nearly halve it.
# Spark's tests share one worker (one JVM) through their xdist group.
PYTEST_ARGS ?= -n auto --dist loadgroup
BENCH_SIZE ?= 1GB
DEMO_DIR ?= demo-output
CHROMIUM ?= /usr/bin/chromium

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.core
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.read: pyproject.toml $(VENV)/.core
	$(PY) -m pip install -q -e '.[read]'
	touch $@

# pyspark is a 320 MB sdist that pip builds into a wheel (minutes): built once, kept under ~/.cache, installed
# from there (seconds). The version the tests run on; the extra accepts any 3.5 or 4.x.
SPARK_VERSION ?= 3.5.9
SPARK_WHEELS ?= $(HOME)/.cache/capture-engine/wheels

$(VENV)/.spark: pyproject.toml $(VENV)/.dev
	mkdir -p $(SPARK_WHEELS)
	test -f $(SPARK_WHEELS)/pyspark-$(SPARK_VERSION)-py2.py3-none-any.whl || \
		$(PY) -m pip wheel -q --no-deps -w $(SPARK_WHEELS) pyspark==$(SPARK_VERSION)
	$(PY) -m pip install -q --find-links $(SPARK_WHEELS) pyspark==$(SPARK_VERSION) -e '.[spark]'
	touch $@

install: $(VENV)/.core ## Create .venv with the engine (runtime dependencies only)

install-dev: $(VENV)/.dev ## Create .venv with the engine and the dev extras

demo: $(VENV)/.read ## Synthesize sample capture, run every job on it, print how to read the results back
	$(VENV)/bin/capture-engine demo $(DEMO_DIR)

lint: $(VENV)/.dev ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check engine tests benchmarks
	$(VENV)/bin/ruff format --check engine tests benchmarks
	$(VENV)/bin/mypy

test: $(VENV)/.dev $(VENV)/.spark lint chromium ## Lint, type-check, run the test suite, then the benchmarks at CI size
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory bench-ci

bench-ci: $(VENV)/.dev ## Kernel benchmarks and the end-to-end comparison at CI size (results in benchmarks/results/)
	$(PY) -m pytest benchmarks/test_kernels.py -q -p no:cacheprovider --benchmark-json=benchmarks/results/kernels.json
	$(PY) -m benchmarks.run --size 20MB
	$(PY) -m benchmarks.run --job decode --size 20MB
	$(PY) -m benchmarks.batch_bench --size 20MB
	$(PY) -m benchmarks.run --job merge --size 20MB
	$(PY) -m benchmarks.s3_objects --objects 300 --json benchmarks/results/s3_objects-ci.json
	$(PY) -m benchmarks.monitor_bench --rows 50000 --tools engine,pandas-scipy --json benchmarks/results/monitor-ci.json

chromium: ## Find headless Chromium for the report's browser test, or install Debian's chromium (as root)
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the report's browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else echo "no $(CHROMIUM), and not root to install it: the report's browser test will be skipped"; fi

report-demo: $(VENV)/.dev chromium ## The HTML report of a damaged sample (gap, rejects, drift) and its screenshot
	$(PY) -m engine.html.demo $(DEMO_DIR)/report --screenshot docs/report-demo.png

install-spark: $(VENV)/.spark ## Add pyspark (cached wheel) to .venv for the Spark executor and its tests

spark-archive: ## Pack the engine's environment for Spark executors (spark.archives): dist/capture-engine-spark.tar.gz
	rm -rf build/spark-env
	$(PYTHON) -m venv build/spark-env
	build/spark-env/bin/python -m pip install -q --upgrade pip
	build/spark-env/bin/python -m pip install -q '.[s3]' 'pandas>=2.0' venv-pack
	mkdir -p dist
	build/spark-env/bin/venv-pack -q -p build/spark-env -o dist/capture-engine-spark.tar.gz -f
	@echo "dist/capture-engine-spark.tar.gz: pass it as spark.archives=...#environment (see README, Spark)"

format: $(VENV)/.dev ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix engine tests benchmarks
	$(VENV)/bin/ruff format engine tests benchmarks

bench: $(VENV)/.dev ## End-to-end benchmarks at full size (BENCH_SIZE, default 1GB) against DuckDB, polars, pandas
	$(PY) -m benchmarks.run --size $(BENCH_SIZE) --repeat 3
	$(PY) -m benchmarks.run --job decode --size $(BENCH_SIZE) --repeat 3
	$(PY) -m benchmarks.json_payloads --size $(BENCH_SIZE) --repeat 3 --job
	$(PY) -m benchmarks.batch_bench --size $(BENCH_SIZE) --repeat 3
	$(PY) -m benchmarks.run --job merge --rows 2000000 --repeat 3
	$(PY) -m benchmarks.s3_objects --objects 5000 --repeat 3
	$(PY) -m benchmarks.s3_objects --objects 5000 --repeat 3 --latency-ms 20 --json benchmarks/results/s3_objects-latency20.json
	$(MAKE) --no-print-directory $(VENV)/.spark
	$(PY) -m benchmarks.spark_bench --size $(BENCH_SIZE)
	$(MAKE) --no-print-directory bench-monitor

bench-capture: $(VENV)/.dev ## Overhead per request of the capture middleware (a trivial model, in process and under uvicorn)
	$(PY) -m benchmarks.capture_overhead --json benchmarks/results/capture_overhead.json

CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE ?= capture-engine:latest

image: ## Build the container image (Dockerfile) with docker or podman
	@if [ -z "$(CONTAINER_ENGINE)" ]; then echo "make image: no container engine (docker or podman) is installed here"; exit 1; fi
	@if ! $(CONTAINER_ENGINE) info >/dev/null 2>&1; then \
		echo "make image: $(CONTAINER_ENGINE) is installed but cannot reach its daemon or service"; exit 1; fi
	$(CONTAINER_ENGINE) build -t $(IMAGE) .


$(VENV)-monitor-peers/.done: pyproject.toml
	$(PYTHON) -m venv $(VENV)-monitor-peers
	$(VENV)-monitor-peers/bin/python -m pip install -q '.[monitor-peers]'
	touch $@

bench-monitor: $(VENV)/.dev $(VENV)-monitor-peers/.done ## Monitoring at 2M rows x 70 features against whylogs, Evidently, pandas + scipy (peers in a venv of their own)
	$(PY) -m benchmarks.monitor_bench --rows 2000000 --rows-list 500000,1000000 --peer-python $(VENV)-monitor-peers/bin/python

$(VENV)-sagemaker/.done:
	$(PYTHON) -m venv $(VENV)-sagemaker
	$(VENV)-sagemaker/bin/python -m pip install -q 'sagemaker>=2.200,<3'
	touch $@

monitor-sdk: $(VENV)/.dev $(VENV)-sagemaker/.done ## Load the monitoring outputs with the SageMaker SDK's own classes (boto3: a venv of its own)
	MONITOR_SDK_PYTHON=$(VENV)-sagemaker/bin/python $(PY) -m pytest tests/monitor/test_monitor_sdk.py -q -p no:cacheprovider

clean: ## Remove the virtual environment and generated files
	rm -rf $(VENV) $(VENV)-monitor-peers $(VENV)-sagemaker $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis benchmarks/.data

.PHONY: help install install-dev demo lint test bench-ci format bench bench-monitor monitor-sdk clean bench-capture chromium report-demo image install-spark spark-archive
