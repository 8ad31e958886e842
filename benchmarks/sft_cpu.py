"""Measure a short CPU SFT of the embedded model on fixture data, then check that the saved model answers a benign
in-distribution request with a <tool_call> block. One command, prints its numbers:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/sft_cpu.py --examples 100 --steps 20
    .venv/bin/python benchmarks/sft_cpu.py --examples 100 --steps 20 --threads 2      # a quiet 2-core machine

Prints: tokens per example (median / max, with the SFT rendering), train examples, steps, tokens/s, s/step, peak RSS,
first/last loss, and the generation check. The run folder is kept (--out) for `agentalign agentharm --model RUN/sft/model`.
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=2, help="per device and micro-step")
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--loss-impl", default="auto")
    ap.add_argument("--out", default=None, help="run folder (default: a new temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from agentalign.dataset import DatasetConfig, run_dataset, write_fixture_run
    from agentalign.sft import SFTConfig, run_sft
    out = Path(a.out or tempfile.mkdtemp(prefix="agentalign-sft-bench-"))
    t0 = time.time()
    run = write_fixture_run(out, n=a.examples, seed=a.seed)
    ds = run_dataset(run, DatasetConfig(token_budget=a.max_length))
    t_data = time.time() - t0
    cfg = SFTConfig(max_steps=a.steps, per_device_batch_size=a.batch_size, grad_accum=a.grad_accum, max_length=a.max_length, threads=a.threads,
                    learning_rate=a.lr, loss_impl=a.loss_impl, seed=a.seed)
    s = run_sft(run, cfg, overwrite=True)
    keys = ("device", "threads", "loss_impl", "train_examples", "validation_examples", "dropped_over_budget", "steps", "batch_size",
            "tokens_per_example_median", "tokens_per_example_max", "train_tokens", "padding_share", "tokens_per_s",
            "seconds_per_step", "train_seconds", "peak_rss_mb", "first_loss", "last_loss", "eval_loss")
    print(json.dumps({"run": str(run.path), "data_seconds": round(t_data, 1), "dataset_tokens": ds.get("tokens"), **{k: s.get(k) for k in keys}}, indent=1))
    # the saved model answers benign validation requests: does it call a tool?
    import torch
    from agentalign.models import load_model
    m, tok = load_model(str(run.path / "sft" / "model"), device="cpu")
    rows = [(sp, json.loads(l)) for sp in ("validation", "train") for l in (run.path / "dataset" / "data" / f"{sp}.jsonl").read_text().splitlines()]
    checks = []
    for label in ("benign", "harmful"):
        for sp, r in [(sp, r) for sp, r in rows if r["label"] == label][:3]:
            prompt = tok.apply_chat_template(r["messages"][:1], tools=json.loads(r["tools"]), add_generation_prompt=True, tokenize=False)
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad(): gen = m.generate(**ids, max_new_tokens=48, do_sample=False)
            text = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=False)
            checks.append({"label": label, "split": sp, "tool_call": "<tool_call>" in text, "starts": text[:40] if label == "benign" else None})
    print(json.dumps({"generation": checks}, indent=1))

if __name__ == "__main__":
    main()
