"""How close does `agentalign instructions` come to a bare client loop over the same requests?

A loopback OpenAI-compatible server answers every chat completion after a fixed latency (default 2 s) with valid
instruction JSON. We time

1. the stage as a user runs it: `agentalign instructions --limit 240 --counts 1:1:1 --mode free --concurrency 64`
   (720 requests), a fresh process and run folder, wall time from start to exit (imports, taxonomy, instantiation,
   requests, parsing, writing, figures); once with figures (the default) and once with `--no-figures`;
2. a bare `openai.AsyncOpenAI` loop sending the same 720 request bodies with 64 in flight (the requests are built
   beforehand, untimed),

and print the ratio bare / stage (1.0 = no overhead; target >= 0.85, issue 10). Run it with one command:

    .venv/bin/python benchmarks/instructions_vs_bare.py [--latency 2] [--limit 240] [--concurrency 64]

Numbers depend on the machine's load: the stage's fixed costs are CPU work, the bare loop mostly waits.
"""
import argparse, asyncio, hashlib, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def make_app(latency: float):
    from fastapi import FastAPI, Request
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        await asyncio.sleep(latency)
        user = next((m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"), "")
        m = re.search(r"Write (\d+) request", user)
        n = int(m.group(1)) if m else 1
        stated = " ".join(v.strip() for line in re.findall(r"^\s+state: (.*)$", user, re.M) for v in re.findall(r"= ([^;]+)", line))
        tag = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:10]   # distinct texts: no duplicates
        content = json.dumps({"instructions": [f"Benchmark request {tag}-{i}: please do this with {stated or 'the tools'}." for i in range(n)]})
        return {"id": "cmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "bench"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}

    @app.get("/v1/models")
    async def models(): return {"object": "list", "data": [{"id": "bench", "object": "model"}]}
    return app

def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    import httpx, socket
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(port), str(latency)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200: return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError: time.sleep(0.1)
    proc.kill(); raise SystemExit("benchmark server did not start: " + proc.stderr.read().decode()[-2000:])

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "BENCH_API_KEY": "bench-not-a-secret", "PYTHONPATH": str(REPO)}

def run_stage(url: str, limit: int, concurrency: int, figures: bool) -> dict:
    out = tempfile.mkdtemp(prefix="agentalign-bench-")
    cmd = [sys.executable, "-c", "from agentalign.cli import main; main()", "instructions", "--out", out, "--backend", "openai",
           "--model", "bench", "--base-url", url, "--api-key-env", "BENCH_API_KEY", "--limit", str(limit), "--counts", "1:1:1",
           "--mode", "free", "--concurrency", str(concurrency), "--figures" if figures else "--no-figures"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode != 0: raise SystemExit(f"stage failed: {r.stderr[-2000:]}")
    s = json.loads((Path(out) / "instructions" / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "requests": s["requests"], "produced": s["produced"], "llm_s": s.get("llm_seconds"),
            "stage_s": s.get("seconds"), "figures": bool(s.get("figures")), "out": out}

def build_bodies(limit: int) -> list[dict]:
    "The request bodies the stage sends in free mode (built with the package's own prompt code, untimed)."
    sys.path.insert(0, str(REPO))
    from agentalign.taxonomy import load_taxonomy
    from agentalign.chains import curated_chains, instantiate
    from agentalign.decontamination import load_decontaminator
    from agentalign.instructions import instruction_request, KINDS
    tax = load_taxonomy(); decon, _ = load_decontaminator()
    bodies = []
    for c in curated_chains(tax)[:limit]:
        inst = instantiate(c, tax, 0)
        for k in KINDS:
            req, _ = instruction_request(inst, k, 1, 0, tax, decon)
            bodies.append({"messages": req.messages, "temperature": req.temperature, "max_tokens": req.max_tokens, "seed": req.seed,
                           "response_format": {"type": "json_schema", "json_schema": {"name": req.schema_name, "schema": req.response_schema, "strict": True}}})
    return bodies

async def bare_loop(url: str, bodies: list[dict], concurrency: int) -> float:
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=url, api_key="bench-not-a-secret", max_retries=0, timeout=120)
    sem = asyncio.Semaphore(concurrency)
    async def one(b):
        async with sem:
            r = await client.chat.completions.create(model="bench", **b)
            json.loads(r.choices[0].message.content)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    dt = time.perf_counter() - t0
    await client.close()
    return dt

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    proc, url = start_server(a.latency)
    try:
        bodies = build_bodies(a.limit)
        bare = asyncio.run(bare_loop(url, bodies, a.concurrency))
        nofig = run_stage(url, a.limit, a.concurrency, figures=False)
        fig = run_stage(url, a.limit, a.concurrency, figures=True)
    finally:
        proc.terminate(); proc.wait(10)
    ideal = -(-len(bodies) // a.concurrency) * a.latency
    res = {"requests": len(bodies), "latency_s": a.latency, "concurrency": a.concurrency, "ideal_s": ideal, "bare_loop_s": round(bare, 2),
           "stage_no_figures": nofig, "stage_with_figures": fig,
           "ratio_no_figures": round(bare / nofig["wall_s"], 3), "ratio_with_figures": round(bare / fig["wall_s"], 3),
           "target": 0.85, "load_avg": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(res, indent=1))

if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "serve":
    import uvicorn
    uvicorn.run(make_app(float(sys.argv[3])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", backlog=2048)
elif __name__ == "__main__":
    main()
