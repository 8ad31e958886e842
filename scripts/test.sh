#!/usr/bin/env bash
# Run the whole test suite: every notebook through nbdev's test runner, then pytest.
# Fails if nbdev-export or nbdev-clean would change a file (notebooks and agentalign/ out of sync, or notebooks not
# clean), and if the tests leave anything changed or new in the working tree (runs belong in temporary folders).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg
# the notebooks' demo cells and pytest write into temporary folders: keep them in one private folder, removed when
# the tests pass (kept for inspection when they fail)
TESTS_TMP=$(mktemp -d -t agentalign-tests-XXXXXX)
trap 'rc=$?; if [ $rc -eq 0 ]; then rm -rf "$TESTS_TMP"; else echo "temporary files of the failed tests: $TESTS_TMP"; fi' EXIT
export TMPDIR=$TESTS_TMP
# nbdev-test runs two notebooks at once on this 2-core machine: one BLAS/OpenMP thread each avoids the
# oversubscription that makes local generation several times slower.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# The real AgentHarm validation split: agentalign.core.agentharm_dir() finds ../shared/agentharm-validation beside the
# repo by itself (as in CI); tests that need it skip with a reason where there is none.
state() { git status --porcelain --untracked-files=all; git diff | sha256sum; }
before=$(state)
.venv/bin/nbdev-export
.venv/bin/nbdev-clean
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export / nbdev-clean changed files: the notebooks and agentalign/ are out of sync or notebooks are not clean:"
  diff <(echo "$before") <(echo "$after") | sed -n 's/^> /  /p'
  exit 1
fi
# slow demo cells run only when AGENTALIGN_SLOW=1 (the default of every notebook's `run_slow` parameter)
echo "==> notebooks (nbdev-test)"
.venv/bin/nbdev-test --n-workers 2 --timing
echo "==> pytest"
.venv/bin/pytest -q --durations=15 tests   # the 15 slowest tests, so the suite's time stays visible
after=$(state)
if [ "$before" != "$after" ]; then
  echo "FAIL: the tests changed or added files in the working tree (run outputs belong in temporary folders):"
  diff <(echo "$before") <(echo "$after") | sed -n 's/^> /  /p'
  exit 1
fi
