#!/usr/bin/env bash
# The GPU table: an exported model on ONNX Runtime's CUDA and TensorRT providers at batch 1-32, and
# the decoders (bench/gpu_table.py prints it). Makes its own environment, since onnxruntime-gpu must
# never share one with onnxruntime (both are the module `onnxruntime`; the last installed wins).
#
#   bash bench/gpu.sh [--model DIR] [--venv DIR] [--wheels DIR] [-- gpu_table.py options]
#   bash bench/gpu.sh --dry-run     checks the script on a machine without a GPU (CPU provider, project .venv)
#
# --wheels DIR: install from pre-downloaded wheels only (a machine with no package index).
set -euo pipefail
cd "$(dirname "$0")/.."

model=models/digits/onnx
venv="${TMPDIR:-/tmp}/w2v-gpu-venv"
wheels=""
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

die() { echo "error: $*" >&2; exit 1; }
[ -f "$model/config.json" ] || die "$model is not an exported model folder (python -m export onnx --out DIR)"

if [ "$dry_run" = 1 ]; then
  [ -x .venv/bin/python ] || die "--dry-run uses the project's .venv (make setup-dev)"
  echo "dry run: would make $venv with onnxruntime-gpu[cuda,cudnn]==1.31.1 and tensorrt-cu13, then run the table"
  PYTHONPATH="$PWD" .venv/bin/python bench/gpu_table.py --model "$model" --dry-run "$@"
  exit 0
fi

command -v nvidia-smi >/dev/null || die "no nvidia-smi: this machine has no NVIDIA driver (use --dry-run to check the script)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  || die "nvidia-smi finds no usable GPU"
python=$(command -v python3.12 || command -v python3.11 || true)
[ -n "$python" ] || die "needs Python 3.11 or 3.12 (flashlight-text and kenlm wheels)"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || die "could not create a virtual environment at $venv (python3-venv installed?)"
fi
pip=("$venv/bin/pip" install -q)
[ -n "$wheels" ] && pip+=(--no-index --find-links "$wheels")
# The core's dependencies as pyproject.toml pins them, the GPU runtime with its CUDA and cuDNN wheels,
# TensorRT's libraries, and the decoders.
packages=(numpy==1.26.4 soundfile==0.14.0 soxr==1.1.0 huggingface_hub==2.4.0
          "onnxruntime-gpu[cuda,cudnn]==1.31.1" tensorrt-cu13 pyctcdecode==0.5.0 kenlm==0.3.0 flashlight-text==0.0.7)
"${pip[@]}" "${packages[@]}" || die "could not install ${packages[*]} into $venv: no package index here? \
download the wheels elsewhere (pip download --dest DIR ...) and pass --wheels DIR"
if "$venv/bin/pip" show onnxruntime >/dev/null 2>&1; then
  die "$venv has the CPU package onnxruntime beside onnxruntime-gpu; remove it: $venv/bin/pip uninstall -y onnxruntime onnxruntime-gpu, then rerun"
fi
# onnxruntime-gpu finds the pip-installed CUDA, cuDNN and TensorRT libraries once they are on the loader's path.
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
libs=$(find "$site/nvidia" "$site/tensorrt_libs" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: || true)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHONPATH="$PWD" "$venv/bin/python" bench/gpu_table.py --model "$model" "$@"
