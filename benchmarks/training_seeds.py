"""The small preset's training over seeds, with and without the decision head (issue 18): one command on a finished run's
dataset (read only; copied per seed):

    .venv/bin/python benchmarks/training_seeds.py --run runs/small --out /tmp/seeds --seeds 0,1,2

For each seed: the preset's SFT (its `[sft]` table, that seed) on a copy of RUN/dataset in OUT/seed<N>/; then the
decision head (`agentalign.decision`, `nbs/08d_decision.ipynb`) fitted on that model and the same training examples,
saved beside it as OUT/seed<N>/head_model (the SFT model itself, trained with the head off, stays as it is; the
requests the responses stage answered with no response, RUN/responses/requests.jsonl, join the head's fit as in the SFT stage); then both models scored by the intent
metric (`agentalign intent`: our labelled requests and the AgentHarm validation prompts present, evaluation only) and,
unless `--no-agentharm`, by AgentHarm validation with the preset's `[agentharm]` table (offline judge). Printed: one JSON
line per model and seed (also appended to OUT/results.jsonl; a rerun skips what is there), then a table per model with
every seed and the mean and spread. Nothing here is a test: the numbers depend on the data, the seed and the machine.
AgentHarm is only scored, never trained on.
"""
import argparse, json, os, shutil, statistics, sys, time
from pathlib import Path


def copy_dataset(src: Path, d: Path) -> None:
    "RUN/dataset and what its done.json names as inputs, so that the SFT stage finds a finished dataset stage."
    from agentalign.core import read_json
    if (d / "dataset").is_dir(): return
    d.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "dataset", d / "dataset")
    for rel in read_json(src / "dataset" / "done.json")["identity"]["inputs"]:
        if not Path(rel).is_absolute(): (d / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src / rel, d / rel)
    req = Path("responses") / "requests.jsonl"             # requests answered by no response: the head's extra first turns
    if (src / req).is_file(): (d / req).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src / req, d / req)


def head_model(d: Path, cfg) -> dict:
    "Fit the decision head on OUT/seed<N>/sft/model and its training examples; save the result as head_model/."
    from transformers import AutoModelForCausalLM
    from agentalign.core import RunDir
    from agentalign.decision import apply_head, fit_head_stage
    from agentalign.sft import load_tokenizer, prepare_examples
    out = d / "head_model"
    if (out / "head.json").is_file():                     # reused only if fitted with today's inputs (first turns counted since 2026-12-07)
        info = json.loads((out / "head.json").read_text())
        if "first_turns_only" in info: return info
        sys.exit(f"{out}: a head fitted before first-turn requests were counted; delete it or use another --out")
    tok = load_tokenizer(d / "sft" / "model")
    ex = prepare_examples(RunDir(d), tok, cfg)
    model = AutoModelForCausalLM.from_pretrained(str(d / "sft" / "model"))
    head, info = fit_head_stage(model, tok, ex, cfg)
    apply_head(model, *head)
    tmp = d / ".head_model.tmp"; shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp)); tok.padding_side = "left"; tok.save_pretrained(str(tmp))
    (tmp / "head.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True); tmp.rename(out)
    return info


def score(d: Path, model: Path, label: str, a) -> dict:
    "Intent metric and (unless --no-agentharm) AgentHarm of one model, as flat numbers."
    from agentalign.agentharm.evaluate import AgentHarmConfig, run_agentharm
    from agentalign.core import RunDir
    from agentalign.intent import IntentConfig, run_intent
    from agentalign.settings import Settings
    t0 = time.time()
    s = run_intent(RunDir(d), Settings(a.preset).stage(IntentConfig).model_copy(update={"model": str(model), "label": label, "figures": False}))
    row = {k: s.get(k) for k in ("ours_auroc", "ours_refusal_harmful", "ours_refusal_benign", "agentharm_auroc",
                                 "agentharm_refusal_harmful", "agentharm_refusal_benign", "probe_ours_cv", "probe_transfer")}
    row["intent_seconds"] = round(time.time() - t0, 1)
    if a.agentharm:
        t1 = time.time()
        m = run_agentharm(RunDir(d), Settings(a.preset).stage(AgentHarmConfig).model_copy(update={"model": str(model), "label": label}))
        row.update({k: m.get(k) for k in ("harmful_score", "harmful_refusal", "benign_score", "benign_refusal", "n_harmful", "n_benign")})
        row["agentharm_seconds"] = round(time.time() - t1, 1)
        row.update(gap_p(m))
    return row


def gap_p(m: dict) -> dict:
    "The refusal gap (H - B, points) and its two-sided Fisher exact p from AgentHarm's refusal rates and counts."
    from scipy.stats import fisher_exact
    nh, nb = m["n_harmful"], m["n_benign"]
    rh, rb = round(m["harmful_refusal"] * nh / 100), round(m["benign_refusal"] * nb / 100)
    return {"refusal_gap": round(m["harmful_refusal"] - m["benign_refusal"], 1),
            "fisher_p": float(fisher_exact([[rh, nh - rh], [rb, nb - rb]])[1]), "refused_harmful": rh, "refused_benign": rb}


def sft_config(a, seed: int):
    "The preset's [sft] table with --sft-set and this seed, the head on (as the preset trains it)."
    from agentalign.settings import Settings
    from agentalign.sft import SFTConfig
    base = Settings(a.preset).stage(SFTConfig).model_dump()
    return SFTConfig(**{**base, **a.sft_set, "seed": seed, "figures": False, "progress": False, "threads": a.threads, "decision_head": True})


def one_seed(seed: int, src: Path, out: Path, a, done: set) -> list[dict]:
    from agentalign.core import RunDir
    from agentalign.settings import Settings
    from agentalign.sft import SFTConfig, run_sft
    d = out / f"seed{seed}"
    copy_dataset(src, d)
    cfg = sft_config(a, seed)
    plain = cfg.model_copy(update={"decision_head": False})   # the SFT model without the head; the head is fitted on it below
    rows = []
    t0 = time.time()
    done_sft = d / "sft" / "summary.json"                 # trained by an earlier call (perhaps before a new setting existed): reused
    status = RunDir(d).status("sft", plain)
    if status[0] == "changed": sys.exit(f"{d}/sft: trained with other settings ({status[1]}); use another --out")
    s = json.loads(done_sft.read_text()) if status[0] == "done" else run_sft(RunDir(d), plain)
    train = {"steps": s["steps"], "train_examples": s["train_examples"], "train_seconds": s["train_seconds"], "last_loss": s["last_loss"]}
    for model, label in ((d / "sft" / "model", "sft"), (d / "head_model", "sft+head")):
        if (seed, label) in done or label not in a.models: continue
        extra = {}
        if label == "sft+head":
            t1 = time.time(); info = head_model(d, cfg)
            extra = {"head_lambda": info["lambda"], "head_cv_auroc": info["cv_auroc"][str(info["lambda"])], "head_seconds": round(time.time() - t1, 1)}
        row = {"seed": seed, "model": label, "sft_set": a.sft_set, **train, **extra, **score(d, model, label.replace("+", "_"), a)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (out / "results.jsonl").open("a") as f: f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    f = lambda x, s=".1f": "-" if x is None else format(x, s)
    keys = [("ours_auroc", "ours AUROC", ".2f"), ("agentharm_auroc", "AgentHarm AUROC", ".2f"), ("harmful_refusal", "H refusal %", ".1f"),
            ("benign_refusal", "B refusal %", ".1f"), ("refusal_gap", "gap", "+.1f"), ("fisher_p", "Fisher p", ".2g"),
            ("harmful_score", "H score", ".1f"), ("benign_score", "B score", ".1f")]
    out = ["| model | seed | " + " | ".join(k[1] for k in keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["seed"])
        for r in rs: out.append(f"| {model} | {r['seed']} | " + " | ".join(f(r.get(k), s) for k, _, s in keys) + " |")
        if len(rs) > 1:
            cell = lambda k, s: (f"{f(statistics.mean(v), s)} ± {f(statistics.stdev(v), s.lstrip('+'))}" if len(v := [r[k] for r in rs if r.get(k) is not None]) > 1 else "-")
            out.append(f"| {model} | mean ± sd | " + " | ".join(cell(k, s) if k != "fisher_p" else "-" for k, _, s in keys) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with a finished dataset stage (read only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--agentharm", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--models", default="sft,sft+head", help="which models to score: sft (plain SFT), sft+head (with the decision head)")
    ap.add_argument("--sft-set", action="append", default=[], metavar="KEY=JSON",
                    help="change one [sft] setting of the preset, e.g. first_turn_training=true (repeatable)")
    a = ap.parse_args()
    a.models = {m.strip() for m in a.models.split(",") if m.strip()}
    try: a.sft_set = {k.strip(): json.loads(v) for k, v in (x.split("=", 1) for x in a.sft_set)}
    except ValueError as e: sys.exit(f"--sft-set: expected KEY=JSON (e.g. first_turn_training=true): {e}")
    if not a.models or a.models - {"sft", "sft+head"}: sys.exit(f"--models: expected sft and/or sft+head, got {a.models}")
    os.environ["AGENTALIGN_TORCH_THREADS"] = str(a.threads)
    src, out = Path(a.run), Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if not (src / "dataset" / "done.json").is_file(): sys.exit(f"{src}: no finished dataset stage (run `agentalign run` first)")
    old = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()] if (out / "results.jsonl").is_file() else []
    done = {(r["seed"], r["model"]) for r in old}
    if any(r.get("sft_set", {}) != a.sft_set for r in old): sys.exit(f"{out}/results.jsonl: rows made with another --sft-set; use another --out")
    try: sft_config(a, 0)
    except ValueError as e: sys.exit(f"--sft-set: {' '.join(str(e).split()[4:])[:200]}")
    rows = list(old)
    for seed in [int(s) for s in a.seeds.split(",") if s.strip()]: rows += one_seed(seed, src, out, a, done)
    print(table(rows))


if __name__ == "__main__":
    main()
