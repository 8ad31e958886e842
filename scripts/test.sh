#!/usr/bin/env bash
# Run the whole test suite: every notebook through nbdev's test runner, then pytest.
# Fails if nbdev-export or nbdev-clean would change a tracked file (notebooks and agentalign/ out of sync).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg
# nbdev-test runs two notebooks at once on this 2-core machine: one BLAS/OpenMP thread each avoids the
# oversubscription that made local generation ~3x slower in our measurements.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# The real AgentHarm validation split, when a copy sits beside the repo (CI); tests skip with a reason otherwise.
if [ -z "${AGENTALIGN_AGENTHARM_DIR:-}" ] && [ -d ../shared/agentharm-validation ]; then
  export AGENTALIGN_AGENTHARM_DIR="$(cd ../shared/agentharm-validation && pwd)"
fi
state() { git status --porcelain --untracked-files=all -- agentalign nbs; git diff -- agentalign nbs | sha256sum; }
before=$(state)
.venv/bin/nbdev-export
.venv/bin/nbdev-clean
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export / nbdev-clean changed files: the notebooks and agentalign/ are out of sync or notebooks are not clean:"
  diff <(echo "$before") <(echo "$after") | sed -n 's/^> /  /p'
  exit 1
fi
echo "==> notebooks (nbdev-test)"
.venv/bin/nbdev-test --n-workers 2 --timing
echo "==> pytest"
.venv/bin/pytest -q tests
