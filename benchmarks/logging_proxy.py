"""A logging HTTP proxy for benchmarks/endpoint_llamacpp.sh, and the counts it reports.

`serve`: every request to the upstream server is relayed and written as one JSON line: time, method, path, whether it
carried an Authorization header, a hash of its body, the structured-output schema name or `tools` it asked for,
whether it is the package's capability probe, and the upstream status. When the upstream does not accept the
connection, or dies before answering, the client's connection is dropped without an answer, as a dead server leaves it;
when the client hangs up first (its timeout), the upstream connection is closed too, so the server stops that work.

`summary LOG...`: the counts of one or more logs. `rerun FIRST SECOND`: whether the second run (after the server was
killed and restarted) sent only requests that the first had not got answered.

    python benchmarks/logging_proxy.py serve --listen 18081 --upstream 18080 --log /tmp/proxy.jsonl
    python benchmarks/logging_proxy.py summary /tmp/proxy.jsonl
"""
import argparse, asyncio, hashlib, json, sys, time
from collections import Counter

PROBE_MARK = b"agentalign capability probe"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    "(head, body) of the next HTTP/1.1 request on the connection, or None at its end."
    try: head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError): return None
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length": n = int(v.strip())
    return head, (await reader.readexactly(n) if n else b"")


def with_close(head: bytes) -> bytes:
    "The request head with `Connection: close` (one request per upstream connection: its response ends at EOF)."
    lines = [l for l in head.rstrip(b"\r\n").split(b"\r\n") if not l.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"


async def relay(head: bytes, body: bytes, upstream: int) -> bytes | None:
    "The upstream's whole response, or None when it refuses the connection or dies before answering."
    try: r, w = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError: return None
    try:
        w.write(with_close(head) + body); await w.drain()
        data = await r.read()
    except (ConnectionError, OSError): data = b""
    finally: w.close()                       # also when cancelled: the server then drops the abandoned request
    return data if data.startswith(b"HTTP/") else None


async def answer_or_hang_up(reader: asyncio.StreamReader, head: bytes, body: bytes, upstream: int) -> bytes | None | str:
    "The upstream's response; 'gone' when the client hung up first (a client-side timeout), so the upstream is left too."
    up, eof = asyncio.create_task(relay(head, body, upstream)), asyncio.create_task(reader.read(1))
    done, _ = await asyncio.wait({up, eof}, return_when=asyncio.FIRST_COMPLETED)
    if up in done:
        eof.cancel(); return up.result()
    up.cancel()
    return "gone"


def describe(body: bytes) -> dict:
    "What a chat request asked for: its schema name, whether it offered tools and which tool_choice."
    try: b = json.loads(body)
    except ValueError: return {}
    if not isinstance(b, dict): return {}
    return {"schema": ((b.get("response_format") or {}).get("json_schema") or {}).get("name"), "tools": len(b.get("tools") or []),
            "tool_choice": b.get("tool_choice") if isinstance(b.get("tool_choice"), str) else None}


def handler(upstream: int, log_path: str):
    async def handle(reader, writer):
        try:
            while (req := await read_request(reader)) is not None:
                head, body = req
                first = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                entry = {"t": round(time.time(), 3), "method": first[0], "path": first[1],
                         "authorization": any(l.lower().startswith(b"authorization:") for l in head.split(b"\r\n")),
                         "body": hashlib.sha256(body).hexdigest()[:16] if body else None, "probe": PROBE_MARK in body, **describe(body)}
                resp = await answer_or_hang_up(reader, head, body, upstream)
                entry["status"] = "client gone" if resp == "gone" else int(resp.split(b" ", 2)[1]) if resp else "no answer"
                with open(log_path, "a") as f: f.write(json.dumps(entry) + "\n")
                if resp is None or resp == "gone": writer.transport.abort(); return
                writer.write(resp); await writer.drain()
                if b"\r\nconnection: close" in resp.split(b"\r\n\r\n", 1)[0].lower(): break
        except (ConnectionError, asyncio.IncompleteReadError): pass
        finally:
            try: writer.close()
            except Exception: pass
    return handle


async def serve(listen: int, upstream: int, log_path: str):
    server = await asyncio.start_server(handler(upstream, log_path), "127.0.0.1", listen)
    async with server: await server.serve_forever()


def read(path: str) -> list[dict]:
    with open(path) as f: return [json.loads(l) for l in f if l.strip()]


def chats(entries: list[dict], probes: bool = False) -> list[dict]:
    return [e for e in entries if e["path"].endswith("/chat/completions") and e["probe"] == probes]


def summary(entries: list[dict]) -> dict:
    c = chats(entries)
    return {"requests": len(c), "status": dict(Counter(str(e["status"]) for e in c)), "probes": len(chats(entries, True)),
            "other_paths": dict(Counter(e["path"] for e in entries if not e["path"].endswith("/chat/completions"))),
            "with_authorization": sum(e["authorization"] for e in entries),
            "by_kind": dict(Counter(e.get("schema") or (f"tools/{e.get('tool_choice') or 'auto'}" if e.get("tools") else "text") for e in c)),
            "distinct_bodies": len({e["body"] for e in c}), "answered_bodies": len({e["body"] for e in c if e["status"] == 200})}


def rerun(first: list[dict], second: list[dict]) -> dict:
    "Whether the second run asked again for anything the first had got answered (it must not)."
    ok1 = {e["body"] for e in chats(first) if e["status"] == 200}
    failed1 = {e["body"] for e in chats(first) if e["status"] != 200} - ok1
    asked2 = [e["body"] for e in chats(second)]
    return {"first_answered": len(ok1), "first_unanswered": len(failed1), "second_requests": len(asked2),
            "second_repeats_of_answered": len(ok1 & set(asked2)), "second_retries_of_unanswered": len(failed1 & set(asked2)),
            "second_new": len(set(asked2) - ok1 - failed1), "second_not_answered": sum(e["status"] != 200 for e in chats(second))}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve"); s.add_argument("--listen", type=int, required=True); s.add_argument("--upstream", type=int, required=True)
    s.add_argument("--log", required=True)
    s = sub.add_parser("summary"); s.add_argument("logs", nargs="+")
    s = sub.add_parser("rerun"); s.add_argument("first"); s.add_argument("second")
    a = ap.parse_args()
    if a.cmd == "serve": asyncio.run(serve(a.listen, a.upstream, a.log))
    elif a.cmd == "summary": print(json.dumps(summary([e for p in a.logs for e in read(p)]), indent=1))
    else:
        r = rerun(read(a.first), read(a.second)); print(json.dumps(r, indent=1))
        sys.exit(0 if r["second_repeats_of_answered"] == 0 and r["second_not_answered"] == 0 else 1)
