"""SFT variants compared on the refuse-or-act decision of held-in requests of our own data (issue 18): today's SFT, +
decision weight, + twin batches, + both. One command, on a finished run's dataset (read only; copied per variant):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/decision_ablation.py --run runs/small --out /tmp/ablation

Every variant trains the small preset's SFT (its `[sft]` table; `--epochs` overrides) on a copy of RUN/dataset in
OUT/<variant>/, holding out the same instances (`select_share`, seeded: twins of one chain instance, half harmful) and
scoring them every `--select-steps` steps with the intent metric's decision score (`agentalign.decision`). Printed: one
JSON line per variant (held-in decision AUROC and refusal rates at the last step and at the best step, train seconds
and CPU seconds, tokens) and a table. `--intent-limit N` also scores each final model on N harmful + N benign requests
of data/judge_labels.jsonl (`agentalign intent`, our set only). AgentHarm is never used. Nothing here is a test: the
numbers depend on the data, the seed and the machine.
"""
import argparse, json, os, resource, shutil, sys, time
from pathlib import Path

VARIANTS = {
    "sft": {},                                                    # today's recipe: length-grouped batches, every token alike
    "+weight": {"decision_weight": 5.0, "decision_tokens": 8},
    "+twins": {"twin_batches": True},
    "+weight+twins": {"decision_weight": 5.0, "decision_tokens": 8, "twin_batches": True},
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(name: str, src: Path, out: Path, a) -> dict:
    from agentalign.core import RunDir, read_json
    from agentalign.settings import Settings
    from agentalign.sft import SFTConfig, run_sft
    d = out / name
    shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    shutil.copytree(src / "dataset", d / "dataset")
    if (src / "quality" / "records.jsonl").is_file(): (d / "quality").mkdir(); shutil.copy2(src / "quality" / "records.jsonl", d / "quality" / "records.jsonl")
    for rel in read_json(src / "dataset" / "done.json")["identity"]["inputs"]:    # what the dataset stage read (responses/records.jsonl)
        if not Path(rel).is_absolute(): (d / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src / rel, d / rel)
    base = Settings(a.preset).stage(SFTConfig)
    over = {"select_share": a.select_share, "select_steps": a.select_steps, "seed": a.seed, "threads": a.threads, "figures": False,
            "progress": False, **VARIANTS[name]}
    if a.epochs is not None: over["epochs"] = a.epochs
    if a.max_steps is not None: over["max_steps"] = a.max_steps
    if a.base_model: over["base_model"] = a.base_model
    cfg = base.model_copy(update=over)
    t0, c0 = time.time(), cpu_seconds()
    s = run_sft(RunDir(d), cfg)
    row = {"variant": name, "seed": a.seed, "epochs": cfg.epochs, "steps": s["steps"], "train_examples": s["train_examples"],
           "train_seconds": s["train_seconds"], "wall_seconds": round(time.time() - t0, 1), "cpu_seconds": round(cpu_seconds() - c0, 1),
           "train_tokens": s["train_tokens"], "padding_share": s["padding_share"], "last_loss": s["last_loss"], **s["selection"]}
    journal = [json.loads(l) for l in (d / "sft" / "selection.jsonl").read_text().splitlines() if l.strip()]
    row["heldin_by_step"] = {j["step"]: (round(j["auroc"], 3) if j["auroc"] is not None else None, j["refusal_harmful"], j["refusal_benign"]) for j in journal}
    last = journal[-1] if journal else {}
    row.update({"last_auroc": last.get("auroc"), "last_refusal_harmful": last.get("refusal_harmful"), "last_refusal_benign": last.get("refusal_benign")})
    if a.intent_limit:
        from agentalign.intent import IntentConfig, run_intent
        t1 = time.time()
        m = run_intent(RunDir(d), IntentConfig(model=str(d / "sft" / "model"), label=name, sets=["ours"], limit=a.intent_limit, layers=[], figures=False))
        mm = read_json(Path(m["folder"]) / "metrics.json")["sets"]["ours"]
        row.update({"ours_n": mm["n"], "ours_auroc": mm["auroc"], "ours_refusal_harmful": mm["refusal_harmful"],
                    "ours_refusal_benign": mm["refusal_benign"], "intent_seconds": round(time.time() - t1, 1)})
    if a.dpo: row.update(dpo_after(d, cfg, a))
    if not a.keep_models: shutil.rmtree(d / "sft" / "model", ignore_errors=True); shutil.rmtree(d / ".trainer", ignore_errors=True)
    return row


def dpo_after(d: Path, sft_cfg, a) -> dict:
    "DPO of the variant's SFT model on the run's pairs minus the held-in instances, then the held-in decision metrics of the DPO model."
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from agentalign.core import RunDir, read_jsonl, write_jsonl
    from agentalign.decision import heldin_scorer
    from agentalign.dpo import DPOConfig, run_dpo
    from agentalign.pairs import run_pairs
    from agentalign.sft import load_tokenizer
    run = RunDir(d)
    run_pairs(run)
    held = {r["instance_id"] for r in read_jsonl(d / "sft" / "records.jsonl") if r.get("split") == "heldin"}
    pairs = [p for p in read_jsonl(d / "pairs" / "pairs.jsonl") if p["instance_id"] not in held]
    write_jsonl(d / "pairs_train.jsonl", pairs)
    t0 = time.time()
    s = run_dpo(run, DPOConfig(pairs=str(d / "pairs_train.jsonl"), epochs=a.dpo_epochs, beta=a.dpo_beta, learning_rate=a.dpo_lr,
                               threads=a.threads, figures=False, progress=False, seed=a.seed))
    rows = [r for r in load_from_disk(str(d / "dataset" / "hf"))["train"] if r["instance_id"] in held]
    tok = load_tokenizer(d / "dpo" / "model")
    m = heldin_scorer(tok, rows, sft_cfg.render_kw)(AutoModelForCausalLM.from_pretrained(str(d / "dpo" / "model")))
    return {"dpo_pairs": len(pairs), "dpo_steps": s["steps"], "dpo_seconds": round(time.time() - t0, 1), "dpo_last_loss": s["last_loss"],
            "dpo_reward_accuracy": s["last_reward_accuracy"], "dpo_auroc": m["auroc"], "dpo_refusal_harmful": m["refusal_harmful"],
            "dpo_refusal_benign": m["refusal_benign"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run folder with a finished dataset stage (read only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--base-model", default=None, help="default: the preset's (embedded)")
    ap.add_argument("--select-share", type=float, default=0.25)
    ap.add_argument("--select-steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--intent-limit", type=int, default=0)
    ap.add_argument("--keep-models", action="store_true")
    ap.add_argument("--dpo", action="store_true", help="then DPO of each variant's model on the pairs (held-in instances left out)")
    ap.add_argument("--dpo-epochs", type=float, default=1.0)
    ap.add_argument("--dpo-beta", type=float, default=0.1)
    ap.add_argument("--dpo-lr", type=float, default=5e-6)
    a = ap.parse_args()
    os.environ["AGENTALIGN_TORCH_THREADS"] = str(a.threads)
    src, out = Path(a.run), Path(a.out); out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [v.strip() for v in a.variants.split(",") if v.strip()]:
        r = one(name, src, out, a); rows.append(r)
        print(json.dumps(r), flush=True)
        with (out / "results.jsonl").open("a") as f: f.write(json.dumps(r) + "\n")
    f = lambda x, s=".3f": "-" if x is None else format(x, s)
    print("| variant | steps | held-in n | AUROC (last step) | H refusal | B refusal | best step | AUROC (best) | train s | CPU s | + DPO AUROC | + DPO H / B refusal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['steps']} | {r['heldin_requests']} | {f(r['last_auroc'])} | {f(r['last_refusal_harmful'], '.0%')} | "
              f"{f(r['last_refusal_benign'], '.0%')} | {r['best_step']} | {f(r['best_auroc'])} | {r['train_seconds']} | {r['cpu_seconds']} | "
              f"{f(r.get('dpo_auroc'))} | {f(r.get('dpo_refusal_harmful'), '.0%')} / {f(r.get('dpo_refusal_benign'), '.0%')} |")


if __name__ == "__main__":
    main()
