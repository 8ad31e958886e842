"""Synthesis numbers: argument-plan statistics over the curated chains, and (optionally) an embedded-model run of
the instruction and chain stages.

    .venv/bin/python benchmarks/synthesis.py                       # plans only (seconds)
    .venv/bin/python benchmarks/synthesis.py --llm-chains 4        # + embedded model on 4 chains / 4 subcategories (minutes)
"""
import argparse, collections, json, os, statistics, sys, tempfile, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from agentalign.core import RunDir
from agentalign.taxonomy import load_taxonomy
from agentalign.chains import curated_chains, instantiate, plan_problems, stage_backend, synthesize_chains
from agentalign.instructions import stated_values, synthesize_instructions

def plans(seeds: int) -> dict:
    tax = load_taxonomy(); cur = curated_chains(tax)
    t0 = time.time(); insts = [instantiate(c, tax, s) for s in range(seeds) for c in cur]; dt = time.time() - t0
    slots = collections.Counter(l.slot.split(":")[0] for i in insts for st in i.argument_plan for l in st.links)
    tools = collections.Counter(t for i in insts for t in i.tools)
    return {"instances": len(insts), "seconds": round(dt, 2), "per_instance_ms": round(1000 * dt / len(insts), 2),
            "invalid_plans": sum(bool(plan_problems(i.argument_plan, tax)) for i in insts),
            "with_links": round(sum(any(st.links for st in i.argument_plan) for i in insts) / len(insts), 3),
            "links_per_instance": round(sum(len(st.links) for i in insts for st in i.argument_plan) / len(insts), 3),
            "stated_values_mean": round(statistics.mean(len(stated_values(i.argument_plan)) for i in insts), 2),
            "tools_used": f"{len(tools)} of {len(tax.tools)}", "links_by_slot": dict(slots.most_common())}

def llm_run(n: int, counts: str, concurrency: int) -> dict:
    run = RunDir(tempfile.mkdtemp(prefix="agentalign-bench-"))
    be, cfg, gen = stage_backend(run, "local", "embedded", None, "OPENAI_API_KEY", concurrency, None)
    t0 = time.time(); s = synthesize_instructions(run, be, counts=counts, limit=n, concurrency=concurrency, generator=gen, figures=False)
    ti = time.time() - t0
    be, cfg, gen = stage_backend(run, "local", "embedded", None, "OPENAI_API_KEY", concurrency, None)
    t0 = time.time(); c = synthesize_chains(run, be, per_subcategory=2, limit=n, concurrency=concurrency, generator=gen)
    tc = time.time() - t0
    return {"run": str(run.path), "instructions": {"seconds": round(ti, 1), "requests": s["requests"], "requested": s["requested"],
            "produced": s["produced"], "per_kind": s["per_kind"], "failures_by_reason": s["failures_by_reason"],
            "mean_plan_coverage": s["mean_plan_coverage"]},
            "chains": {"seconds": round(tc, 1), "requests": c["requests"], "proposed": c["proposed"], "valid": c["valid"],
                       "new_chains": c["new_chains"], "failures_by_reason": c["failures_by_reason"]}}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--llm-chains", type=int, default=0)
    ap.add_argument("--counts", default="1:1:1")
    ap.add_argument("--concurrency", type=int, default=4)
    a = ap.parse_args()
    out = {"plans": plans(a.seeds)}
    if a.llm_chains: out["embedded"] = llm_run(a.llm_chains, a.counts, a.concurrency)
    print(json.dumps(out, indent=2))
