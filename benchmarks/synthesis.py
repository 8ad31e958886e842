"""Synthesis numbers: argument-plan and draft statistics over the curated chains, and (optionally) the instruction
stage with the embedded model, free writing vs draft-and-rewrite, on one curated chain per category.

    .venv/bin/python benchmarks/synthesis.py                         # plans + drafts only (seconds)
    nice -n 10 .venv/bin/python benchmarks/synthesis.py --compare 1  # + embedded model: 8 chains x 1:1:1, free vs rewrite (minutes)

Set OMP_NUM_THREADS / AGENTALIGN_TORCH_THREADS on a shared machine. Generated instructions stay in the printed run
folders; only counts are printed.
"""
import argparse, collections, json, os, statistics, tempfile, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from agentalign.taxonomy import load_taxonomy
from agentalign.chains import curated_chains, instantiate, plan_problems
from agentalign.drafts import KINDS, stated_values, draft_for, goal_from_explanation
from agentalign.instructions import InstructionsConfig, run_instructions
from agentalign.llm.base import LLMConfig

def plans(seeds: int) -> dict:
    tax = load_taxonomy(); cur = curated_chains(tax)
    t0 = time.time(); insts = [instantiate(c, tax, s) for s in range(seeds) for c in cur]; dt = time.time() - t0
    slots = collections.Counter(l.slot.split(":")[0] for i in insts for st in i.argument_plan for l in st.links)
    tools = collections.Counter(t for i in insts for t in i.tools)
    t0 = time.time(); drafts = {k: [draft_for(i, k, 0, 0) for i in insts[:len(cur)]] for k in KINDS}; dd = time.time() - t0
    return {"instances": len(insts), "seconds": round(dt, 2), "per_instance_ms": round(1000 * dt / len(insts), 2),
            "invalid_plans": sum(bool(plan_problems(i.argument_plan, tax)) for i in insts),
            "with_links": round(sum(any(st.links for st in i.argument_plan) for i in insts) / len(insts), 3),
            "links_per_instance": round(sum(len(st.links) for i in insts for st in i.argument_plan) / len(insts), 3),
            "stated_values_mean": round(statistics.mean(len(stated_values(i.argument_plan)) for i in insts), 2),
            "tools_used": f"{len(tools)} of {len(tax.tools)}", "links_by_slot": dict(slots.most_common()),
            "drafts": {"per_draft_ms": round(1000 * dd / (3 * len(cur)), 3),
                       "explanations_turned_into_intent": f"{sum(goal_from_explanation(c.explanation) is not None for c in cur)} of {len(cur)}",
                       "mean_words": {k: round(statistics.mean(len(d.split()) for d, _ in v), 1) for k, v in drafts.items()},
                       "mean_intent_words": {k: round(statistics.mean(len(t.split()) for _, t in v), 1) for k, v in drafts.items()}}}

def compare(per_category: int, counts: str, concurrency: int, modes=("rewrite", "free")) -> dict:
    "The embedded model on the first `per_category` curated chains of each category, in each mode (own run folders and caches)."
    tmp = tempfile.mkdtemp(prefix="agentalign-compare-")
    out = {"per_category": per_category, "counts": counts, "folder": tmp}
    for mode in modes:
        cfg = InstructionsConfig(per_category=per_category, counts=counts, mode=mode, figures=False, writer=LLMConfig(concurrency=concurrency))
        t0 = time.time()
        try: s = run_instructions(os.path.join(tmp, mode), cfg)
        except Exception as e:                                        # e.g. every slot failed: report it, go on
            out[mode] = {"error": str(e)}; continue
        out[mode] = {"seconds": round(time.time() - t0, 1), "chains": s["chains"], "requests": s["requests"], "requested": s["requested"],
                     "produced": s["produced"], "per_kind": {k: f"{v['produced']}/{v['requested']}" for k, v in s["per_kind"].items()},
                     "sources": s["sources"], "sources_per_kind": {k: v["sources"] for k, v in s["per_kind"].items()},
                     "rewrite_share": s["rewrite_share"], "rewrite_fallbacks": s["rewrite_fallbacks"],
                     "mean_plan_coverage": s["mean_plan_coverage"], "mean_plan_coverage_by_source": s["mean_plan_coverage_by_source"],
                     "failures_by_reason": s["failures_by_reason"]}
    return out

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--compare", type=int, default=0, help="curated chains per category for the free vs rewrite run (0: skip)")
    ap.add_argument("--counts", default="1:1:1")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--modes", default="rewrite,free")
    a = ap.parse_args()
    res = {"plans": plans(a.seeds)}
    if a.compare: res["embedded"] = compare(a.compare, a.counts, a.concurrency, tuple(a.modes.split(",")))
    print(json.dumps(res, indent=2))
