.PHONY: demo test lint bench

demo:   ## install and run the demo
	scripts/demo

test:   ## install everything and run the whole test suite (what CI runs)
	scripts/test

lint:
	python3 -m ruff check . && python3 -m ruff format --check . && python3 -m mypy

bench:  ## print the benchmark ratios
	for b in benchmarks/bench_*.py; do python3 $$b; done
