"""Where AgentHarm refusals happen: at the first turn, or after the model had already called a tool. One bar pair
(harmful, benign) per AgentHarm stage folder, each bar split into the two; for several models or seeds side by side:

    .venv/bin/python benchmarks/refusal_turns.py --out figures/refusal_turns.png \\
        "no faults, seed 0=runs/a/agentharm/sft" "fault_share 0.5, seed 0=runs/b/agentharm/sft"

Reads each folder's `samples.json` (`refusal`, `n_tool_calls` per sample, written by `agentalign agentharm`); prints
the counts as a table. "After a tool call": a refused sample whose episode has at least one tool call (where the
refusal stands in it is not checked; read the inspect logs for that). Nothing here is a test: the numbers depend on the models and the data.
"""
import argparse, json, sys
from pathlib import Path


def counts(folder: Path) -> dict:
    "Refused at the first turn / after a tool call, and n, per task."
    p = folder / "samples.json"
    if not p.is_file(): sys.exit(f"{folder}: no samples.json (is it an AgentHarm stage folder, RUN/agentharm/<label>?)")
    from agentalign.agentharm.report import task_metrics
    rows = json.loads(p.read_text())
    out = {}
    for task in ("harmful", "benign"):
        m = task_metrics([r for r in rows if r["task"] == task])
        out[task] = {"n": m["n"], "first": m["refused"] - m["refused_with_tool_calls"], "after_tool": m["refused_with_tool_calls"]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=FOLDER, FOLDER an AgentHarm stage folder (RUN/agentharm/<label>)")
    ap.add_argument("--out", required=True, help="the figure (PNG)")
    a = ap.parse_args()
    bad = [r for r in a.runs if "=" not in r]
    if bad: sys.exit(f"expected LABEL=FOLDER, got {bad[0]!r}")
    data = [(label, counts(Path(folder))) for label, folder in (r.split("=", 1) for r in a.runs)]
    print("| model | H refused: first turn / after a tool call (n) | B refused: first turn / after a tool call (n) |\n| --- | --- | --- |")
    for label, c in data:
        print(f"| {label} | " + " | ".join(f"{c[t]['first']} / {c[t]['after_tool']} ({c[t]['n']})" for t in ("harmful", "benign")) + " |")
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(data)), 4.2))
    for i, (label, c) in enumerate(data):
        for j, (task, color) in enumerate((("harmful", "#c44e52"), ("benign", "#4c72b0"))):
            n = max(1, c[task]["n"]); x = i + (j - 0.5) * 0.38
            first, late = 100 * c[task]["first"] / n, 100 * c[task]["after_tool"] / n
            ax.bar(x, first, 0.36, color=color, label=f"{task}: first turn" if i == 0 else None)
            ax.bar(x, late, 0.36, bottom=first, color=color, alpha=0.4, hatch="//", label=f"{task}: after a tool call" if i == 0 else None)
    ax.set_xticks(range(len(data)), [l for l, _ in data], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("refused (%)"); ax.set_ylim(0, 100); ax.legend(fontsize=8, ncol=2); ax.set_title("AgentHarm refusals: first turn or after a tool call")
    fig.tight_layout(); Path(a.out).parent.mkdir(parents=True, exist_ok=True); fig.savefig(a.out, dpi=120); plt.close(fig)
    print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
