"""Throughput of `agentalign.llm.run_batch` vs a bare `AsyncOpenAI` loop against a loopback server with 1 s latency.

    .venv/bin/python benchmarks/llm_throughput.py [--latency 1.0] [--seconds 8] [--levels 1,8,64] [--repeats 2]
    .venv/bin/python benchmarks/llm_throughput.py --local [--batch-sizes 1,4,8] [--n 16] [--tokens 32]

The server (FastAPI + uvicorn, 127.0.0.1, random port) runs in its own process and answers every chat completion after
`latency` seconds. For each concurrency level both clients send the same number of requests (about `seconds` worth at
the ideal rate) through the same kind of `AsyncOpenAI` client; the batch helper is measured plain and with the SQLite
cache wrapped around it (fresh file, every request a miss, so every answer is also written). Prints requests/s and
the ratio run_batch / bare loop; the target is >= 0.85 at concurrency 64.

`--local` instead measures the embedded model (SmolLM2-135M on the CPU) through `LocalBackend` + `run_batch`:
generated tokens/s for several batch sizes, `n` greedy requests of exactly `tokens` new tokens each.
"""
import argparse, asyncio, os, socket, subprocess, sys, tempfile, time
from pathlib import Path

SERVER = '''
import asyncio, sys, uvicorn
from fastapi import FastAPI
api = FastAPI()
LAT = float(sys.argv[2])
@api.post("/v1/chat/completions")
async def completions(body: dict):
    await asyncio.sleep(LAT)
    return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " + body["messages"][-1]["content"]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
uvicorn.run(api, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", backlog=2048, timeout_keep_alive=60)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


async def bare_loop(url: str, n: int, conc: int, tag: str) -> float:
    from openai import AsyncOpenAI
    client = AsyncOpenAI(api_key="not-needed", base_url=url, max_retries=0)
    sem = asyncio.Semaphore(conc)
    async def one(i):
        async with sem:
            r = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"{tag}-{i}"}],
                                                     temperature=0.0, max_tokens=16, seed=0, timeout=60)
            assert r.choices[0].message.content == f"ok {tag}-{i}"
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt = time.perf_counter() - t0
    await client.close()
    return n / dt


async def helper(url: str, n: int, conc: int, tag: str, cache: Path | None) -> float:
    from agentalign.llm.base import ChatRequest, CachedBackend, run_batch
    from agentalign.llm.openai import OpenAIBackend
    b = OpenAIBackend("bench", base_url=url)
    if cache is not None: b = CachedBackend(b, cache)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"{tag}-{i}"}], max_tokens=16, timeout=60, id=str(i)) for i in range(n)]
    t0 = time.perf_counter()
    res = await run_batch(b, reqs, concurrency=conc, progress=False)
    dt = time.perf_counter() - t0
    assert all(r.ok and r.response.content == f"ok {tag}-{i}" for i, r in enumerate(res)), [r.failure for r in res if not r.ok][:3]
    await b.aclose()
    return n / dt


def local_bench(batch_sizes: list[int], n: int, tokens: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from agentalign.llm.base import ChatRequest, run_batch_sync
    from agentalign.llm.local import LocalBackend
    from agentalign.models import cpu_threads
    print(f"embedded model, CPU threads {cpu_threads()}, {n} requests x {tokens} new tokens at most (greedy)")
    print(f"{'batch_size':>10} {'seconds':>8} {'tok/s':>8} {'req/s':>7}")
    for bs in batch_sizes:
        b = LocalBackend("embedded", batch_size=bs); b._load()
        reqs = [ChatRequest(messages=[{"role": "user", "content": f"Write a long story about the number {i}."}], max_tokens=tokens, id=str(i)) for i in range(n)]
        run_batch_sync(b, reqs[:1], progress=False)                     # warm-up
        t0 = time.perf_counter(); res = run_batch_sync(b, reqs, concurrency=max(bs, 1) * 2, progress=False); dt = time.perf_counter() - t0
        toks = sum(r.response.usage["completion_tokens"] for r in res if r.ok)
        print(f"{bs:>10} {dt:>8.1f} {toks / dt:>8.1f} {n / dt:>7.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", action="store_true", help="benchmark the embedded model instead of the HTTP path")
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=8.0, help="ideal duration of one measurement")
    ap.add_argument("--levels", default="1,8,64")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    if a.local: return local_bench([int(x) for x in a.batch_sizes.split(",")], a.n, a.tokens)
    port = free_port(); url = f"http://127.0.0.1:{port}/v1"
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(a.latency)])
    try:
        import httpx
        t0 = time.time()
        while True:
            try: httpx.post(url + "/chat/completions", json={"model": "w", "messages": [{"role": "user", "content": "w"}]}, timeout=5); break
            except httpx.HTTPError:
                if time.time() - t0 > 60: raise SystemExit("benchmark server did not start")
                time.sleep(0.2)
        print(f"loopback server latency {a.latency:g}s; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
        print(f"{'concurrency':>11} {'requests':>8} {'bare req/s':>10} {'run_batch':>10} {'ratio':>6} {'+cache':>8} {'ratio':>6} {'ideal':>7}")
        tmp = Path(tempfile.mkdtemp())
        for conc in [int(x) for x in a.levels.split(",")]:
            n = max(conc, int(round(a.seconds / a.latency)) * conc)
            bare, hb, hc = [], [], []
            for rep in range(a.repeats):       # interleaved, so drifts in machine load hit all three alike
                bare.append(asyncio.run(bare_loop(url, n, conc, f"b{conc}-{rep}")))
                hb.append(asyncio.run(helper(url, n, conc, f"h{conc}-{rep}", None)))
                hc.append(asyncio.run(helper(url, n, conc, f"c{conc}-{rep}", tmp / f"cache-{conc}-{rep}.sqlite")))
            b, h, c = max(bare), max(hb), max(hc)
            print(f"{conc:>11} {n:>8} {b:>10.2f} {h:>10.2f} {h / b:>6.3f} {c:>8.2f} {c / b:>6.3f} {conc / a.latency:>7.1f}", flush=True)
    finally:
        srv.terminate(); srv.wait(timeout=10)


if __name__ == "__main__":
    main()
