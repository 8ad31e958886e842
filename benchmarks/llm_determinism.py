"""Does batching change what the embedded model writes? The same 24 requests (greedy, seeded sampling, JSON-schema
constrained) generated with batch sizes 8, 1 and 3 must give the same texts: the local backend relies on it when it
batches whatever requests are waiting (a busy machine batches differently from a quiet one).

    HF_HUB_OFFLINE=1 AGENTALIGN_TORCH_THREADS=1 .venv/bin/python benchmarks/llm_determinism.py [8 1 3]
"""
import hashlib, json, sys, time
from agentalign.llm.base import ChatRequest, run_batch_sync
from agentalign.llm.local import LocalBackend

SCHEMA = {"type": "object", "properties": {"request": {"type": "string"}}, "required": ["request"], "additionalProperties": False}

def requests() -> list[ChatRequest]:
    out = []
    for i in range(12):
        msgs = [{"role": "user", "content": f"Rewrite this request in a friendly tone: please email the agenda for meeting number {i} to the team and book room {i * 7}."}]
        out.append(ChatRequest(messages=msgs, temperature=0.0 if i % 2 else 0.7, max_tokens=60, seed=i, id=str(i)))
        out.append(ChatRequest(messages=msgs, response_schema=SCHEMA, temperature=0.5, max_tokens=80, seed=100 + i, id=f"s{i}"))
    return out

def main(sizes: list[int]) -> int:
    reqs, texts = requests(), {}
    for bs in sizes:
        b, t0 = LocalBackend("embedded", batch_size=bs), time.time()
        res = run_batch_sync(b, reqs, concurrency=8, progress=False)
        texts[bs] = [r.response.content if r.ok else "FAIL:" + r.failure.reason for r in res]
        digest = hashlib.sha256(json.dumps(texts[bs]).encode()).hexdigest()[:12]
        print(f"batch_size {bs}: {time.time() - t0:.1f} s, texts {digest}, batches run {b.generated_batches}", flush=True)
    diffs = [r.id for i, r in enumerate(reqs) if len({texts[bs][i] for bs in sizes}) > 1]
    print("identical across batch sizes" if not diffs else f"{len(diffs)} request(s) differ: {diffs}")
    return 1 if diffs else 0

if __name__ == "__main__": sys.exit(main([int(x) for x in sys.argv[1:]] or [8, 1, 3]))
