# Every target sets itself up (a virtualenv in .venv, or the cached vLLM CPU venv for vLLM tests).
.PHONY: demo test test-vllm lint format bench native clean-native clean

demo:
	@VENV=$$(bash scripts/venv.sh | tail -n 1) && $$VENV/bin/tuner demo

test:
	@bash scripts/test.sh

# The suite with vLLM installed (real scheduler replay and live server); a skip becomes a failure.
test-vllm:
	@TUNER_REQUIRE_VLLM=1 bash scripts/test.sh

# Lint, format and type checks only (the first steps of `make test`); `make format` rewrites.
lint:
	@VENV=$$(bash scripts/venv.sh | tail -n 1) && $$VENV/bin/ruff check . && $$VENV/bin/ruff format --check . && $$VENV/bin/mypy tuner

format:
	@VENV=$$(bash scripts/venv.sh | tail -n 1) && $$VENV/bin/ruff format . && $$VENV/bin/ruff check --fix .

bench:
	@VENV=$$(bash scripts/venv.sh | tail -n 1) && for b in benchmarks/bench_*.py; do $$VENV/bin/python $$b; done

# Optional: compile the simulator's engines with mypyc (needs a C compiler and the Python
# headers; the pure-Python engines are used whenever no compiled copy matches them).
native:
	@VENV=$$(bash scripts/venv.sh | tail -n 1) && $$VENV/bin/python scripts/build_native.py

clean-native:
	@python3 scripts/build_native.py clean

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
