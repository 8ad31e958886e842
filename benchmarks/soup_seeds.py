"""Seeds averaged (issue 18): the trained seeds of a `training_seeds.py` folder averaged into one model (a uniform model
soup, `[sft] soup`, `nbs/08d_decision.ipynb` "Averaging seeds"), the decision head fitted on the average, and the
average scored as `training_seeds.py` scores each seed:

    .venv/bin/python benchmarks/training_seeds.py --run runs/small --out /tmp/seeds --seeds 0,1,2 --models sft+head
    .venv/bin/python benchmarks/soup_seeds.py --seeds-out /tmp/seeds --seeds 0,1,2

The members are OUT/seed<N>/sft/model, trained with the same settings and the seeds given, which is what the SFT stage
trains with `soup = 3` and `seed = 0` (seeds 0, 1, 2); the average and its head go to OUT/soup<seeds>/ and the row is
appended to OUT/soup_results.jsonl (a rerun skips a soup that is there). Nothing here is a test: the numbers depend on
the data, the seeds and the machine. AgentHarm is only scored, never trained on.
"""
import argparse, json, os, shutil, sys, time
from pathlib import Path

import training_seeds as ts


def soup_folder(out: Path, seeds: list[int]) -> Path:
    "OUT/soup<seeds>/ holding the members' dataset and requests, and sft/model: the members' mean (written once)."
    from safetensors.torch import save_file
    from agentalign.decision import soup_weights
    members = [out / f"seed{s}" / "sft" / "model" for s in seeds]
    missing = [str(m) for m in members if not (m / "model.safetensors").is_file()]
    if missing: sys.exit(f"no trained model in {', '.join(missing)} (train the seeds with training_seeds.py first)")
    d = out / ("soup" + "-".join(map(str, seeds)))
    ts.copy_dataset(out / f"seed{seeds[0]}", d)
    model = d / "sft" / "model"
    if (model / "model.safetensors").is_file(): return d
    tmp = d / "sft" / ".model.tmp"; shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(members[0], tmp, ignore=shutil.ignore_patterns("model.safetensors", "agentalign_sft.json"))
    save_file({k: v.contiguous() for k, v in soup_weights(members).items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "soup.json").write_text(json.dumps({"members": [str(m) for m in members]}))
    tmp.rename(model)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds-out", required=True, help="a training_seeds.py --out folder whose seeds are trained")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--agentharm", action=argparse.BooleanOptionalAction, default=True)
    a = ap.parse_args()
    out = Path(a.seeds_out)
    try: seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError: sys.exit(f"--seeds: expected integers separated by commas, got {a.seeds!r}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds): sys.exit(f"--seeds: a soup needs two or more different seeds, got {seeds}")
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()] if (out / "results.jsonl").is_file() else []
    if not rows: sys.exit(f"{out}/results.jsonl: no trained seeds (run training_seeds.py --out {out} first)")
    a.sft_set = rows[0].get("sft_set") or {}
    os.environ["AGENTALIGN_TORCH_THREADS"] = str(a.threads)
    done = out / "soup_results.jsonl"
    if done.is_file() and any(json.loads(l).get("soup") == seeds for l in done.read_text().splitlines() if l.strip()):
        print(f"{done}: soup {seeds} already scored"); return
    d = soup_folder(out, seeds)
    cfg = ts.sft_config(a, seeds[0])
    t1 = time.time(); info = ts.head_model(d, cfg)
    row = {"soup": seeds, "model": "soup+head", "sft_set": a.sft_set, "head_lambda": info["lambda"],
           "head_cv_auroc": info["cv_auroc"][str(info["lambda"])], "head_seconds": round(time.time() - t1, 1),
           **ts.score(d, d / "head_model", "soup_head", a)}
    print(json.dumps(row), flush=True)
    with done.open("a") as f: f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
