#!/usr/bin/env bash
# The whole test suite: lint and format (ruff), types (mypy), tests (pytest). Sets itself up on a
# fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(bash scripts/venv.sh | tail -n 1)"
echo "== ruff"; "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check .
echo "== mypy"; "$VENV/bin/mypy" tuner
echo "== pytest"; "$VENV/bin/python" -m pytest "$@"
