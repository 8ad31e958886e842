"""Fault injection for the OpenAI-compatible backend + cache + run_batch.

The scripted loopback server of `conftest.py` fails about 30 % of requests with HTTP 500, HTTP 429 (with
Retry-After), a hang past the client's timeout, a broken HTTP body or malformed content; a few items fail every time.
Every item must end as a success or a recorded failure (none lost, none duplicated, no item gets another item's
answer), and a rerun on the same cache must not re-request any item that already succeeded.
"""
import json, os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from agentalign.core import stable_id
from agentalign.llm.base import ChatRequest, CachedBackend, run_batch_sync
from agentalign.llm.openai import OpenAIBackend
from conftest import Fault

SCHEMA = {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]}
FAULTS = ["http500", "http429", "timeout", "bad_body", "bad_content"]


def fault_for(item: str, hit: int) -> str | None:
    "Deterministic fault plan: items ending in 0 or 7 always fail one way; others fail ~30 % of hits."
    k = int(item.split("-")[1])
    if k % 10 == 0: return "http500"            # permanent server error
    if k % 10 == 7 and k < 30: return "bad_content"   # permanent malformed content
    u = int(stable_id(item, hit), 16) / 16**12
    return FAULTS[int(u / 0.3 * len(FAULTS))] if u < 0.3 else None


class FaultPlan:
    "The server side of the test: which fault each hit of an item gets, and what was served."
    def __init__(self):
        self.hits, self.faults, self.served_ok, self.planned = Counter(), Counter(), Counter(), {}

    def fault(self, body: dict, headers: dict, n: int) -> Fault | None:
        item = body["messages"][-1]["content"]
        self.hits[item] += 1
        f = self.planned[item] = fault_for(item, self.hits[item])
        self.faults[f] += 1
        return {"http500": Fault.status(500, "boom"), "http429": Fault.status(429, "slow down", headers={"Retry-After": "0.05"}),
                "timeout": Fault.hang(1.0), "bad_body": Fault.broken()}.get(f)   # client timeout 0.3 s: a hang never succeeds

    def script(self, req) -> str:
        item = req.messages[-1]["content"]
        if self.planned[item] == "bad_content": return "Sure, here it is: item"
        self.served_ok[item] += 1
        return json.dumps({"item": item})


def test_fault_injection_no_loss_no_duplicates_resume(tmp_path: Path, scripted_server):
    plan = FaultPlan()
    stats = {"hits": plan.hits, "faults": plan.faults, "served_ok": plan.served_ok}
    items = [f"item-{k}" for k in range(120)]
    reqs = [ChatRequest(messages=[{"role": "user", "content": it}], response_schema=SCHEMA, id=it, timeout=0.3, max_tokens=16) for it in items]
    cache = tmp_path / "cache.sqlite"
    srv = scripted_server(plan.script, fault=plan.fault, model="fault")
    def backend():
        return CachedBackend(OpenAIBackend("fault", base_url=srv.url, max_retries=3, format_retries=1), cache)
    res1 = run_batch_sync(backend(), reqs, concurrency=16, progress=False, stage="faults")
    hits1 = Counter(stats["hits"])
    ok1 = {r.id for r in res1 if r.ok}
    failed1 = {r.id for r in res1 if not r.ok}

    # every item accounted for exactly once, in order, with its own answer
    assert [r.id for r in res1] == items
    assert ok1 | failed1 == set(items) and not ok1 & failed1
    for r in res1:
        if r.ok: assert r.response.parsed == {"item": r.id} and not r.response.cached
        else: assert r.failure.stage == "faults" and r.failure.item_id == r.id and r.failure.reason
    # faults really happened, of every kind; every item made at least one and at most (1 + 3 retries) x (1 + 1 format retry) attempts
    assert all(stats["faults"][f] > 0 for f in FAULTS), stats["faults"]
    total = sum(hits1.values())
    assert total == srv.requests > len(items)                   # retries happened (the plan saw every request the server logged)
    assert all(1 <= (r.response.attempts if r.ok else r.failure.attempts) <= 8 for r in res1)
    # permanent failures are recorded with the right reason (and the raw text for malformed content)
    by_id = {r.id: r for r in res1}
    assert by_id["item-10"].failure.reason == "server_error" and by_id["item-10"].failure.attempts == 4
    assert by_id["item-17"].failure.reason == "invalid_json" and by_id["item-17"].failure.raw == "Sure, here it is: item"
    assert by_id["item-17"].failure.attempts == 2
    # no successful answer was requested twice
    assert all(stats["served_ok"][i] == 1 for i in ok1)
    assert len(ok1) >= 0.8 * len(items)

    # rerun on the same cache: successes come from the cache, only failures are asked again
    res2 = run_batch_sync(backend(), reqs, concurrency=16, progress=False, stage="faults")
    new_hits = Counter({k: stats["hits"][k] - hits1[k] for k in items})
    assert all(new_hits[i] == 0 for i in ok1), {i: new_hits[i] for i in ok1 if new_hits[i]}
    assert all(new_hits[i] > 0 for i in failed1)
    assert [r.id for r in res2] == items
    assert all(r.ok and r.response.cached for r in res2 if r.id in ok1)
    assert all(stats["served_ok"][i] <= 1 for i in items)       # never a duplicate successful call
    assert {"item-10", "item-17", "item-20"} <= failed1 and not any(r.ok for r in res2 if r.id in ("item-10", "item-20", "item-17"))
    print(f"\nrun 1: {len(ok1)} ok / {len(failed1)} failed, {total} requests; faults {dict(stats['faults'])}")
