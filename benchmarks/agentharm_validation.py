"""AgentHarm scoring of a local model: seconds per sample and peak memory per batch size, and the Table-1 numbers.

Scores the embedded base model (SmolLM2-135M-Instruct, or --model FOLDER) on the AgentHarm validation split with the
offline judge, once per configuration, each into a fresh temporary run folder with the result cache off, and prints
one line per configuration: samples, seconds per sample (evaluation wall time / samples), the peak resident memory
(RSS) of the evaluation process, and the batches it actually generated (mean rows, largest padded size in tokens).

A configuration is `ROWSxBUDGET`: at most ROWS samples in flight (= rows per batch) and a token budget per batch
(`inf`: no budget, i.e. the behaviour before the budget existed: a batch is as large as the samples in flight).

    nice -n 10 env OMP_NUM_THREADS=1 AGENTALIGN_TORCH_THREADS=1 HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/agentharm_validation.py                    # --limit 4 --configs 1xinf,8xinf,8x4096
    # batch size against memory, as the token budget of nbs/10b_agentharm_provider.ipynb was chosen (each line: one command)
    ... benchmarks/agentharm_validation.py --limit 2 --configs 1xinf,4xinf,4x8192,4x16384
    ... benchmarks/agentharm_validation.py --limit 8 --configs 16xinf,16x4096
    ... benchmarks/agentharm_validation.py --limit 16 --configs 32xinf,32x16384,32x8192

    # the whole validation split once, default settings, Table 1 (long: about 30 s per sample on one thread)
    .venv/bin/python benchmarks/agentharm_validation.py --full --out runs/agentharm-val-base

The AgentHarm files are read from AGENTALIGN_AGENTHARM_DIR (default ../shared/agentharm-validation next to the
repository); they are evaluation data only and are never copied into the repository.
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

def parse_config(s: str) -> tuple[int, int]:
    rows, budget = s.lower().split("x")
    return int(rows), (10**9 if budget in ("inf", "none") else int(budget))

def score(out: Path, model: str, limit, max_tokens: int, rows: int | None, budget: int | None, technique: str = "standard") -> dict:
    from agentalign.agentharm.evaluate import AgentHarmConfig, run_agentharm
    from agentalign.core import read_json
    cfg = AgentHarmConfig(model=model, limit=limit, max_tokens=max_tokens, max_connections=rows, prompt_technique=technique,
                          cache=False, figures=False, progress_every=60, **({"token_budget": budget} if budget else {}))
    t0 = time.time()
    s = run_agentharm(out, cfg)
    m = read_json(Path(s["folder"]) / "metrics.json")
    m["command_seconds"] = round(time.time() - t0, 1)
    return m

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--limit", type=int, default=4, help="behaviors per task (harmful and benign) for the per-batch-size runs")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--configs", default="1xinf,8xinf,8x4096", help="comma-separated ROWSxBUDGET (BUDGET: tokens or inf)")
    ap.add_argument("--full", action="store_true", help="score the whole split once with the default batching and print Table 1")
    ap.add_argument("--out", default=None, help="run folder for --full (default: a temporary folder)")
    ap.add_argument("--prompt-technique", default="standard")
    a = ap.parse_args()
    from agentalign.core import agentharm_dir
    if agentharm_dir() is None: sys.exit("error: no AgentHarm validation folder (set AGENTALIGN_AGENTHARM_DIR or put ../shared/agentharm-validation beside the repo)")
    threads = os.environ.get("AGENTALIGN_TORCH_THREADS", "default"); omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"model {a.model}, AgentHarm val, offline judge, greedy, max_tokens {a.max_tokens}, torch threads {threads}, OMP_NUM_THREADS {omp}")
    if a.full:
        from agentalign.agentharm.report import table1
        out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="agentharm-val-"))
        m = score(out, a.model, None, a.max_tokens, None, None, a.prompt_technique)
        print(table1([m]))
        t = m["timing"]
        print(f"samples {m['n_samples']} (failures {m['n_failures']}); {t['seconds_per_sample']} s/sample; peak RSS {t['peak_rss_mb']} MB; "
              f"batches {json.dumps(t['batches'])}; results in {out}")
        return
    print(f"{'config':>10} {'samples':>7} {'s/sample':>9} {'peak RSS MB':>11} {'mean rows':>9} {'max padded tokens':>17}")
    results = []
    for c in a.configs.split(","):
        rows, budget = parse_config(c)
        with tempfile.TemporaryDirectory(prefix="agentharm-bench-") as d:
            m = score(Path(d) / "run", a.model, a.limit, a.max_tokens, rows, budget)
        t = m["timing"]; b = t["batches"] or {}
        results.append({"config": c, "samples": m["n_samples"], "seconds_per_sample": t["seconds_per_sample"], "peak_rss_mb": t["peak_rss_mb"],
                        "mean_rows": b.get("mean_rows"), "max_padded_tokens": b.get("max_padded_tokens"), "batches": b.get("n")})
        r = results[-1]
        print(f"{c:>10} {r['samples']:>7} {r['seconds_per_sample']:>9} {r['peak_rss_mb']:>11} {r['mean_rows']!s:>9} {r['max_padded_tokens']!s:>17}", flush=True)
    print(json.dumps(results))

if __name__ == "__main__":
    main()
