"""Score the embedded base model (SmolLM2-135M-Instruct) on the AgentHarm validation split with the offline judge.

Prints the eight Table-1 numbers, the judge that produced them, and the wall time per sample on this machine.

    HF_HUB_OFFLINE=1 AGENTALIGN_AGENTHARM_DIR=../shared/agentharm-validation \
        .venv/bin/python benchmarks/agentharm_validation.py [--out runs/agentharm-val-base] [--max-tokens 192] [--limit N]

The run resumes if interrupted (same command). The AgentHarm files are read from AGENTALIGN_AGENTHARM_DIR (default
../shared/agentharm-validation next to the repository); they are never copied into the repository.
"""
import argparse, json, os, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--out", default=str(REPO / "runs" / "agentharm-val-base"))
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--judge", default="offline")
    ap.add_argument("--prompt-technique", default="standard")
    a = ap.parse_args()
    data = os.environ.get("AGENTALIGN_AGENTHARM_DIR") or str(REPO.parent / "shared" / "agentharm-validation")
    if not Path(data).is_dir(): sys.exit(f"error: no AgentHarm validation folder at {data} (set AGENTALIGN_AGENTHARM_DIR)")
    from agentalign.agentharm import run_agentharm, table1
    t0 = time.time()
    m = run_agentharm(a.model, "val", a.out, limit=a.limit, data_dir=data, judge=a.judge, prompt_technique=a.prompt_technique,
                      max_tokens=a.max_tokens, display="plain")
    print(table1([m]))
    print(f"judge: refusal = {m['judge']['refusal']}; semantic = {m['judge']['semantic']}")
    print(f"samples: {m['n_samples']} (failures {m['n_failures']}), max_tokens {m['max_tokens']}, threads {os.environ.get('AGENTALIGN_TORCH_THREADS', 'default')}")
    print(f"eval wall time {m['timing']['eval_seconds']} s = {m['timing']['seconds_per_sample']} s per sample "
          f"(mean per-sample latency {m['timing']['mean_sample_total_time']} s; command {time.time() - t0:.0f} s incl. start-up)")
    print(json.dumps({k: m[k] for k in ("harmful", "benign", "timing")}))

if __name__ == "__main__":
    main()
