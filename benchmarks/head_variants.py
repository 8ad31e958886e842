"""How the decision head holds the tool opening's row in place inside turns decides whether it learns intent (issue 18).
One command on a seed folder of `benchmarks/training_seeds.py` (its SFT model and that model's intent stage, read only):

    .venv/bin/python benchmarks/head_variants.py --seed-dir /tmp/seeds/seed0

The head's positions and features are computed on SFT/model and its training examples exactly as `agentalign.decision`
computes them (`head_points`, `head_features`); then the row change `d` is fitted four ways at each penalty:

- `one-sided`: today's `fit_head`, inner positions held by the squared *rise* of the logit (`head_anchor`);
- `two-sided`: the squared *change* at inner positions (`rise_only=False`, the fit before 2026-12-07);
- `logistic`: inner positions as targets of the logistic loss (the head's first version);
- `first only`: the first positions alone (nothing holds the row elsewhere).

For each: the decision AUROC (harmful scored by minus the log-odds of the opening's first token `<`; the intent stage
scores the whole opening against the refusal openings, so its AUROCs differ a little) on our labelled requests and the AgentHarm
prompts at the first assistant position, from the final hidden states that the intent stage saved (`intent/sft/hidden.npz`,
its last layer must be the model's last; AgentHarm is only scored), the in-sample share of each kind of position where
`p(<) > 1/2` exactly when the tool call opens, and, fitted on half of the chain instances, what the row change does at the
inner positions of the other half: its largest rise (logits) and the share of them where `p(<)` crosses 1/2. Nothing here
is a test: the numbers depend on the data, the seed and the machine.
"""
import argparse, json, os, sys, time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed-dir", required=True, help="OUT/seed<N> of benchmarks/training_seeds.py (sft/model and intent/sft/)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=None, help="the SFT seed of the folder (default: from its name, seed<N>)")
    ap.add_argument("--lambdas", default="1e-4,1e-3,1e-2")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ["AGENTALIGN_TORCH_THREADS"] = str(a.threads)
    import re
    import numpy as np, torch
    from transformers import AutoModelForCausalLM
    from agentalign.core import RunDir, read_jsonl
    from agentalign.decision import fit_head, head_features, head_points, point_weights, tool_logodds
    from agentalign.intent import auroc
    from agentalign.settings import Settings
    from agentalign.decision import head_token
    from agentalign.sft import SFTConfig, load_tokenizer, prepare_examples
    torch.set_num_threads(a.threads)
    d = Path(a.seed_dir); st = d / "intent" / "sft"
    for p in (d / "sft" / "model" / "config.json", st / "hidden.npz", st / "records.jsonl"):
        if not p.is_file(): sys.exit(f"{p}: missing (run benchmarks/training_seeds.py for this seed first)")
    seed = a.seed if a.seed is not None else int(m.group(1)) if (m := re.fullmatch(r"seed(\d+)", d.name)) else None
    if seed is None: sys.exit(f"{d}: pass --seed (the folder's name does not say it)")
    cfg = Settings(a.preset).stage(SFTConfig).model_copy(update={"seed": seed})      # as training_seeds.py fits the head
    tok = load_tokenizer(d / "sft" / "model"); ex = prepare_examples(RunDir(d), tok, cfg)
    model = AutoModelForCausalLM.from_pretrained(str(d / "sft" / "model"))
    layers = json.loads((st / "metrics.json").read_text())["probe"]["layers"]
    if layers[-1] != model.config.num_hidden_layers: sys.exit(f"{st}: the intent stage's last probe layer is {layers[-1]}, not the model's last")
    tool_id = head_token(tok, ex)
    t0 = time.time()
    pts = head_points(ex.train, tool_id, cfg.head_mid, cfg.seed)
    H, off = head_features(model, ex.train, pts, tool_id)
    print(f"features of {len(pts)} positions in {time.time() - t0:.0f} s", file=sys.stderr)
    y = np.array([p[2] for p in pts], float); kinds = np.array([p[3] for p in pts]); w = point_weights(kinds)
    groups = np.array([ex.train_records[p[0]].get("instance_id") or ex.train_records[p[0]]["id"] for p in pts])
    mid, first = kinds == "mid", kinds == "first"
    W = model.get_output_embeddings().weight.detach().double()
    with np.load(st / "hidden.npz") as z: hid = dict(zip(z["ids"].tolist(), z["X"][:, -1]))
    recs = [r for r in read_jsonl(st / "records.jsonl") if r["id"] in hid]
    test = {}
    for s in ("ours", "agentharm"):
        rs = [r for r in recs if r["set"] == s]
        if not rs: continue
        Ht = torch.tensor(np.stack([hid[r["id"]] for r in rs])).double()
        test[s] = (Ht.numpy(), tool_logodds(Ht @ W.T, tool_id).numpy(), np.array([r["label"] == "harmful" for r in rs]))
    inst = sorted(set(groups.tolist())); half = set(np.random.default_rng(0).choice(inst, len(inst) // 2, replace=False).tolist())
    A = np.array([g in half for g in groups])
    fits = {"one-sided": lambda m, lam: fit_head(H[m], off[m], y[m], w[m], lam, mid[m], cfg.head_anchor),
            "two-sided": lambda m, lam: fit_head(H[m], off[m], y[m], w[m], lam, mid[m], cfg.head_anchor, rise_only=False),
            "logistic": lambda m, lam: fit_head(H[m], off[m], y[m], w[m], lam),
            "first only": lambda m, lam: fit_head(H[m & first], off[m & first], y[m & first], w[m & first], lam)}
    right = lambda zz, m: float(((zz[m] > 0) == (y[m] == 1)).mean())
    head = ["variant", "lambda", *(f"AUROC {s}" for s in test), "in-sample right first / turn / mid", "other half: largest rise inside turns", "other half: inside turns over 1/2"]
    rows = [["SFT model", "-", *(f"{auroc(yy, -oo):.3f}" for _, oo, yy in test.values()),
             " / ".join(f"{right(off, kinds == k):.3f}" for k in ("first", "turn", "mid")), "-", f"{((off[~A & mid] > 0) != (y[~A & mid] == 1)).mean():.2%}"]]
    for name, fit in fits.items():
        for lam in [float(x) for x in a.lambdas.split(",")]:
            dd = fit(np.ones(len(y), bool), lam); new = off + H @ dd
            dh = fit(A, lam); z_out = H[~A & mid] @ dh; new_out = off[~A & mid] + z_out
            rows.append([name, f"{lam:g}", *(f"{auroc(yy, -(oo + Ht @ dd)):.3f}" for Ht, oo, yy in test.values()),
                         " / ".join(f"{right(new, kinds == k):.3f}" for k in ("first", "turn", "mid")),
                         f"{z_out.max():+.1f}", f"{((new_out > 0) != (y[~A & mid] == 1)).mean():.2%}"])
            print(json.dumps(dict(zip(head, rows[-1]))), file=sys.stderr, flush=True)
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for r in rows: print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
