"""Time the intent stage (`agentalign intent`) on a model, by default the embedded base model on both request sets (our
128 labelled requests and the 64 AgentHarm validation prompts), and print its numbers. One command:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/intent.py                 # 2 torch threads (2 cores)
    .venv/bin/python benchmarks/intent.py --model RUN/sft/model --label sft --out RUN   # another model, into a run

Prints one JSON object: requests and prompt tokens per set, batch size, torch threads, device, the machine's load
average before and after, the wall time from the first import to the written result (imports, model load, scoring,
probe, figure), the scoring time alone, and the process's CPU time (user + system: on a shared machine the wall time
follows the load, the CPU time much less; CPU seconds / threads is the wall time on that many idle cores); then the stage's table (decision AUROC, refusal rates at the model's
operating point, gap with Fisher p, probe AUROC cross-validated and transferred). The run folder is a new temporary
one unless --out is given (then RUN/intent/<label> is removed first and scored afresh).
"""
import argparse, json, os, resource, shutil, tempfile, time
from pathlib import Path

def main():
    t0 = time.time()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--label", default="base")
    ap.add_argument("--sets", default="ours,agentharm")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (AGENTALIGN_TORCH_THREADS)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="run folder (default: a new temporary folder, removed afterwards)")
    a = ap.parse_args()
    os.environ["AGENTALIGN_TORCH_THREADS"] = str(a.threads)
    load0 = os.getloadavg()
    from agentalign.core import read_json
    from agentalign.intent import IntentConfig, intent_table, label_slug, run_intent
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="agentalign-intent-bench-"))
    shutil.rmtree(out / "intent" / label_slug(a.label), ignore_errors=True)      # scored afresh, never resumed
    cfg = IntentConfig(model=a.model, label=a.label, sets=[s.strip() for s in a.sets.split(",") if s.strip()], limit=a.limit,
                       batch_size=a.batch_size, device=a.device)
    try:
        s = run_intent(out, cfg)
        m = read_json(Path(s["folder"]) / "metrics.json")
        wall = time.time() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"model": a.model, "records": s["records"], "failures": s["failures"],
                          "requests": {k: v["n"] for k, v in m["sets"].items()},
                          "prompt_tokens_mean": {k: round(v["prompt_tokens_mean"], 1) for k, v in m["sets"].items()},
                          "prompt_tokens_max": {k: v["prompt_tokens_max"] for k, v in m["sets"].items()},
                          "batch_size": a.batch_size, "threads": m["timing"]["threads"], "device": m["timing"]["device"],
                          "scored_now": m["timing"]["scored_now"], "scoring_seconds": m["timing"]["seconds"],
                          "wall_seconds": round(wall, 1), "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1), "loadavg_before": [round(x, 2) for x in load0],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()], "skipped": s["skipped"]}, indent=1))
        print(intent_table(m))
    finally:
        if not a.out: shutil.rmtree(out, ignore_errors=True)

if __name__ == "__main__":
    main()
