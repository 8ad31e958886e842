"""Does a tuned model decide differently when a request says what to write instead of quoting the text? (issues 17, 18)

One command on a finished run and one or more tuned models (folders with weights, e.g. from `training_seeds.py`):

    .venv/bin/python benchmarks/written_decision.py --run runs/small --models /tmp/seeds/seed0/head_model,/tmp/seeds/seed1/head_model

The run's first-turn requests (`RUN/responses/requests.jsonl`: the kept requests the responses stage answered with no
response, harmful and benign) are drafted again from their own chain instances (`agentalign.drafts.draft_for`, kind and
index as recorded) at `--draft-seed` (default 11, so that the wording and the scenario draws differ from the trained
requests'), twice: `write_share` 0 (every described text quoted, most with its description) and 1 (every described
text left to the agent, said only by its description). Each model scores the first-turn decision of both forms and of
the recorded (trained) texts with the tools the request was offered (`agentalign.decision.heldin_scorer`: AUROC, refusal
rates at the model's operating point, gap, Fisher p). Printed: one JSON line per model. Read only; nothing is trained and
nothing reaches a run. AgentHarm is not used.

The two forms are a paired comparison with one caveat: a text left to the agent takes other draws from the draft's
generator than a quoted one, so the later scenario-dependent draws of the same request (the descriptions of its other
texts, the purpose frame and where the purpose goes; not whether a purpose is stated) may differ between the forms too.
The first turns are rendered with `--preset`'s `[sft]` settings (tools offered), not the run's own.
"""
import argparse, json, os, sys
from pathlib import Path


def redrafted(rows: list[dict], insts: dict, tax, seed: int, write_share: float) -> list[dict]:
    "`rows` (first-turn requests) with their user text drafted again from their instances at `seed` and `write_share`."
    from agentalign.drafts import draft_for
    out = []
    for r in rows:
        d = draft_for(insts[r["instance_id"]], r["kind"], int(r["instruction_id"].rsplit("#", 1)[1]), seed, tax, write_share)
        out.append({**r, "messages": [{"role": "user", "content": d.text}]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="finished run folder (instructions and responses stages)")
    ap.add_argument("--models", required=True, help="comma-separated model folders")
    ap.add_argument("--draft-seed", type=int, default=11)
    ap.add_argument("--preset", default="small", help="the preset whose [sft] table renders the first turns (tools offered)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("AGENTALIGN_TORCH_THREADS", "2")))
    a = ap.parse_args()
    from agentalign.core import AgentAlignError
    try: score(a)
    except (AgentAlignError, KeyError, ValueError, IndexError, OSError) as e: sys.exit(f"written_decision: {type(e).__name__}: {e}")


def score(a) -> None:
    "Draft the run's first-turn requests in both forms and print each model's decision metrics on them and on the trained texts."
    from agentalign.core import RunDir, read_jsonl
    from agentalign.instructions import InstantiatedChain
    from agentalign.sft import requests_path, requests_rows
    run = RunDir(a.run)
    if not requests_path(run).is_file(): sys.exit(f"written_decision: {requests_path(run)} is missing (finish the run's responses stage first)")
    models = a.models.split(",")
    for m in models:
        if not (Path(m) / "config.json").is_file(): sys.exit(f"written_decision: {m} is not a model folder (no config.json)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from agentalign.decision import heldin_scorer
    from agentalign.settings import Settings
    from agentalign.sft import SFTConfig
    from agentalign.taxonomy import load_taxonomy
    torch.set_num_threads(a.threads)
    rows, tax = requests_rows(run), load_taxonomy()
    insts = {i.id: i for i in read_jsonl(a.run / "instructions" / "instances.jsonl", InstantiatedChain)}
    sets = {"trained": rows, "quoted": redrafted(rows, insts, tax, a.draft_seed, 0.0), "written": redrafted(rows, insts, tax, a.draft_seed, 1.0)}
    changed = sum(q["messages"][0]["content"] != w["messages"][0]["content"] for q, w in zip(sets["quoted"], sets["written"]))
    print(f"{len(rows)} requests; {changed} read differently when their described texts are left to the agent", flush=True)
    kw = Settings(a.preset).stage(SFTConfig).render_kw
    keys = ("auroc", "refusal_harmful", "refusal_benign", "refusal_gap", "fisher_p")
    for m in models:
        tok, model = AutoTokenizer.from_pretrained(m), AutoModelForCausalLM.from_pretrained(m)
        res = {}
        for name, rs in sets.items():
            got = heldin_scorer(tok, rs, kw)(model)
            res[name] = {k: got.get(k) for k in keys}
        print(json.dumps({"model": m, "draft_seed": a.draft_seed, "changed": changed, **res}), flush=True)


if __name__ == "__main__":
    main()
