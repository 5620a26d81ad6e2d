# The two commands of the README: `make demo` and `make test`. Both set up a fresh machine first.
.PHONY: setup demo test lint bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/netvigil testbed demo --profile kz-2019-interception

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy

test: lint
	.venv/bin/pytest

bench: setup
	.venv/bin/python benchmarks/bench_testbed_up.py
	.venv/bin/python benchmarks/bench_probe.py
	.venv/bin/python benchmarks/bench_fingerprints.py
