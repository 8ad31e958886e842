"""How the intent-transfer check (a TF-IDF + logistic-regression classifier trained on our harmful vs benign requests,
scored by AUROC on the AgentHarm prompts present: evaluation only) moves with the data, without any LLM: the
*drafts* (the grounded requests the instructions stage writes before the rewrite) of the curated chains' instances,
for several contrast-twin shares (the share of benign requests whose values come from the subcategory's contrast
twins instead of the everyday pool) and dataset sizes (instances per harm category x requests per instance kind).
Each cell is the mean and sd over `--subsets` random instance subsets. One command (about 3 minutes on 2 cores):

    .venv/bin/python benchmarks/transfer_curve.py                       # shares 0, 0.5, 1
    .venv/bin/python benchmarks/transfer_curve.py --shares 0.5 --sizes 3x1,30x3 --json out.json
    .venv/bin/python benchmarks/transfer_curve.py --shares 0.5 --sizes 12x1,30x3 --write-share 0.5

Prints one line per (share, size): the number of harmful requests, and the word and character n-gram AUROC.

`--ceiling` also prints what the same classifier reaches on AgentHarm behaviors it has not seen when it is trained on
AgentHarm's own prompts of the other behaviors (every split of the behaviors into k seen and the rest unseen): a
reference for the transfer numbers, computed here only. This diagnostic fits a text classifier on AgentHarm prompts;
nothing of it reaches a run, a dataset or a model.
"""
import argparse, json, random, statistics
from pathlib import Path

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shares", default="0,0.5,1", help="contrast-twin shares to compare")
    ap.add_argument("--sizes", default="3x1,3x3,6x1,12x1,30x1,30x3", help="instances per category x requests per kind")
    ap.add_argument("--subsets", type=int, default=5)
    ap.add_argument("--write-share", type=float, default=0.0, help="drafts' write_share: share of described texts left to the agent to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--ceiling", action="store_true", help="also print the AgentHarm-to-unseen-AgentHarm reference")
    a = ap.parse_args()
    if not 0 <= a.write_share <= 1: ap.error(f"--write-share must be between 0 and 1, got {a.write_share}")
    import agentalign.pools as pools
    from agentalign.taxonomy import load_taxonomy
    from agentalign.chains import curated_chains
    from agentalign.instructions import instantiate_all
    from agentalign.drafts import draft_for
    from agentalign.transfer import agentharm_prompts, transfer_scores, ANALYZERS
    tax = load_taxonomy()
    insts, _ = instantiate_all(curated_chains(tax), tax, a.seed)
    ev, ey, note = agentharm_prompts()
    if len(set(ey)) < 2: raise SystemExit(f"transfer_curve: {note}")
    by_cat: dict = {}
    for i in insts: by_cat.setdefault(i.category, []).append(i)
    rows = []
    for share in (float(x) for x in a.shares.split(",")):
        pools.CONTRAST_SHARE = share
        twins = {}
        for size in a.sizes.split(","):
            per_cat, per = (int(x) for x in size.split("x"))
            res = {an: [] for an in ANALYZERS}
            for s in range(a.subsets):
                r = random.Random(f"{a.seed}:{s}")
                sel = [i for c in sorted(by_cat) for i in r.sample(by_cat[c], min(per_cat, len(by_cat[c])))]
                texts, labels = [], []
                for i in sel:
                    for k in range(per):
                        if (i.id, k) not in twins:
                            twins[i.id, k] = tuple(draft_for(i, kd, k, a.seed, tax, a.write_share).text for kd in ("harmful", "benign"))
                        texts += twins[i.id, k]; labels += [1, 0]
                for an in res: res[an].append(transfer_scores(texts, labels, ev, ey, an, a.seed)["auroc"])
            row = {"contrast_share": share, "per_category": per_cat, "per_kind": per, "harmful": len(labels) // 2,
                   **{an: [round(statistics.mean(v), 3), round(statistics.stdev(v), 3) if len(v) > 1 else 0.0] for an, v in res.items()}}
            rows.append(row)
            print(f"contrast share {share:<4} {per_cat:>2} per category x {per} per kind ({row['harmful']:>3} harmful): "
                  + "  ".join(f"{an} {m:.3f} ± {sd:.3f}" for an, (m, sd) in ((an, row[an]) for an in ANALYZERS)), flush=True)
    out = {"agentharm": note, "subsets": a.subsets, "seed": a.seed, "write_share": a.write_share, "rows": rows}
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1))          # the rows first: the ceiling may fail
    if a.ceiling:
        out["ceiling"] = agentharm_ceiling(a.seed)
        if a.json: Path(a.json).write_text(json.dumps(out, indent=1))

def agentharm_ceiling(seed: int = 0) -> dict:
    "Mean and sd AUROC of the classifier trained on the prompts of k AgentHarm behaviors, scored on the other behaviors' prompts."
    import itertools
    from agentalign.core import agentharm_dir
    from agentalign.decontamination import load_behavior_prompts
    from agentalign.transfer import transfer_scores, ANALYZERS
    texts, labels, groups = [], [], []
    for key, text in load_behavior_prompts(agentharm_dir(None)).items():
        stem, rest = key.split(":", 1)
        if stem.startswith(("harmful_behaviors", "benign_behaviors")):
            split = stem.split("_", 2)[-1]                                  # harmful_behaviors_validation -> validation
            texts.append(text); labels.append(int(stem.startswith("harmful"))); groups.append(f"{split}:{rest.split('-')[0]}")
    behaviors, out = sorted(set(groups)), {}
    for k in (len(set(groups)) // 2, len(set(groups)) - 1):
        for an in ANALYZERS:
            res = []
            for seen in itertools.combinations(behaviors, k):
                tr = [i for i, g in enumerate(groups) if g in seen]; te = [i for i, g in enumerate(groups) if g not in seen]
                res.append(transfer_scores([texts[i] for i in tr], [labels[i] for i in tr], [texts[i] for i in te], [labels[i] for i in te], an, seed)["auroc"])
            out[f"{an}, {k} of {len(behaviors)} behaviors seen"] = [round(statistics.mean(res), 3), round(statistics.stdev(res), 3), len(res)]
            print(f"AgentHarm ceiling, {an} n-grams, trained on {k} of {len(behaviors)} behaviors, scored on the rest: "
                  f"{out[f'{an}, {k} of {len(behaviors)} behaviors seen'][0]:.3f} ± {out[f'{an}, {k} of {len(behaviors)} behaviors seen'][1]:.3f} over {len(res)} splits", flush=True)
    return out

if __name__ == "__main__":
    main()
