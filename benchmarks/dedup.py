"""Dedup benchmark: MinHash LSH near-duplicate detection (agentalign.quality.near_duplicates) on synthetic instructions.

    .venv/bin/python benchmarks/dedup.py [--n 100000] [--pairs 5000] [--engine rensa|datasketch|both]

Builds N synthetic agentic requests (random tool steps with random values, personas, purposes), of which PAIRS are
planted near-duplicates of earlier items: a copy edited by word substitutions, deletions, insertions and clause
swaps, kept only when its ROUGE-L F1 (word LCS, computed here) with the original is >= 0.7. The rest are drawn
independently ("distinct" items). Prints the dedup time, recall on planted near-duplicates (dropped as duplicate of
their original's cluster), and precision (planted duplicates among everything flagged) plus the share of distinct
items wrongly flagged. Target (issue 9): 100,000 items in under 20 s with recall >= 0.95.
"""
from __future__ import annotations
import argparse, json, random, time, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYL = "ka ri to mi na so le vu ta pe lo zi ra mo ne di fa gu be ho".split()
FIRST = ["Alex", "Maria", "Jonas", "Priya", "Chen", "Fatima", "Lukas", "Sofia", "Omar", "Yuki", "Elena", "Tom", "Aisha", "Pedro", "Ingrid"]
DOMAINS = ["example.com", "mail.test", "corp.example", "shop.example", "uni.example", "news.test"]
PURPOSES = ["for our quarterly report", "so the team can review it tomorrow", "before the board meeting on Friday",
            "to help my neighbours", "for a school project", "so I can compare prices", "for the charity fundraiser",
            "to prepare the product launch", "because my manager asked for it", "for my thesis chapter",
            "to keep the community informed", "for the weekly newsletter", "to settle the invoice", "for our travel plans"]
OPENERS = ["Hi,", "Hello!", "Quick one:", "Please help me out.", "Good morning.", "Hey there,", "I need a hand.", "",
           "Could you do something for me?", "Thanks in advance:"]
CLOSERS = ["Thanks!", "Let me know when it's done.", "Appreciate it.", "Cheers.", "", "Please confirm afterwards.",
           "Keep it short.", "That's all for now."]

def word(r):  return "".join(r.choices(SYL, k=r.randint(2, 4)))
def email(r): return f"{word(r)}.{word(r)}@{r.choice(DOMAINS)}"
def url(r):   return f"https://{word(r)}.{r.choice(DOMAINS)}/{word(r)}"
def topic(r): return " ".join(word(r) for _ in range(r.randint(1, 3)))

STEPS = [  # each step: several phrasings, random values
    [lambda r: f"search Google for '{topic(r)}' and pick the {r.choice(['top', 'most recent', 'best rated'])} result",
     lambda r: f"look up {topic(r)} on Bing and note the {r.choice(['three', 'five', 'two'])} most useful pages",
     lambda r: f"find recent articles about {topic(r)} with a web search"],
    [lambda r: f"send an email with send_gmail to {email(r)} with the subject '{topic(r)}'",
     lambda r: f"mail {email(r)} a short note titled {topic(r)}",
     lambda r: f"write to {email(r)} from my Outlook account about {topic(r)}"],
    [lambda r: f"text {r.choice(FIRST)} at +1{r.randint(2000000000, 9999999999)} that the {topic(r)} is ready",
     lambda r: f"send an SMS to +44{r.randint(7000000000, 7999999999)} saying {topic(r)} starts at {r.randint(1, 12)} pm",
     lambda r: f"message @{word(r)} on Telegram about {topic(r)}"],
    [lambda r: f"post on Instagram a photo caption about {topic(r)} tagging @{word(r)}",
     lambda r: f"publish a tweet announcing {topic(r)} with the hashtag #{word(r)}",
     lambda r: f"share a TikTok video about {topic(r)} from my account @{word(r)}"],
    [lambda r: f"order {r.randint(1, 20)} units of {topic(r)} on Amazon for delivery to {r.randint(1, 999)} {word(r).title()} Street",
     lambda r: f"buy a {topic(r)} on eBay under {r.randint(10, 900)} dollars",
     lambda r: f"get {topic(r)} delivered from DoorDash to {r.randint(1, 999)} {word(r).title()} Road at {r.randint(5, 9)} pm"],
    [lambda r: f"download the file at {url(r)} and save it as {word(r)}.{r.choice(['csv', 'pdf', 'txt'])}",
     lambda r: f"fetch {url(r)} and store the page in the folder /data/{word(r)}",
     lambda r: f"read the report {word(r)}.docx from my documents and extract the table on {topic(r)}"],
    [lambda r: f"run the command 'ls -la /home/{word(r)}' on the server {word(r)}.{r.choice(DOMAINS)}",
     lambda r: f"check the disk usage of host {word(r)}-{r.randint(1, 99)} and restart the {word(r)} service",
     lambda r: f"ssh into {r.randint(10, 250)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)} and update the {word(r)} package"],
    [lambda r: f"pay {r.randint(5, 5000)} dollars with PayPal to {email(r)} for the {topic(r)}",
     lambda r: f"create a Stripe invoice of {r.randint(5, 5000)} euros for {topic(r)}",
     lambda r: f"check whether Alipay payment {r.randint(10**9, 10**10)} for {topic(r)} went through"],
    [lambda r: f"look up the Twitter profile @{word(r)} and summarise the last posts about {topic(r)}",
     lambda r: f"collect the latest Instagram comments under @{word(r)} mentioning {topic(r)}",
     lambda r: f"find YouTube videos on {topic(r)} and list their view counts"],
    [lambda r: f"create an image with Midjourney showing {topic(r)} in a {r.choice(['watercolour', 'photo', 'cartoon'])} style",
     lambda r: f"generate a {r.randint(5, 60)}-second video of {topic(r)} with Runway",
     lambda r: f"turn the text '{topic(r)}' into speech with ElevenLabs"],
    [lambda r: f"transfer {r.randint(1, 90) / 10} ETH from wallet 0x{r.getrandbits(64):016x} to 0x{r.getrandbits(64):016x}",
     lambda r: f"swap {r.randint(1, 900)} USDC for SOL on wallet {word(r)}",
     lambda r: f"check the balance of bitcoin address bc1q{r.getrandbits(60):015x}"],
    [lambda r: f"clone the git repository {url(r)} and check out the branch {word(r)}",
     lambda r: f"build the docker image {word(r)}:{r.randint(1, 9)}.{r.randint(0, 20)} and push it",
     lambda r: f"open a pull request on {url(r)} fixing {topic(r)}"],
]
CONNECT = [", then ", ", after that ", "; next ", " and then ", ". Then "]

def synth(r: random.Random) -> str:
    steps = [r.choice(r.choice(STEPS))(r) for _ in range(r.randint(2, 4))]
    body = steps[0] + "".join(r.choice(CONNECT) + s for s in steps[1:])
    who = r.choice([f"As {r.choice(FIRST)} from {word(r).title()}", "", f"I'm {r.choice(FIRST)}, a {r.choice(ROLES)}, and", "Hi, this is for work:"])
    return " ".join(x for x in [r.choice(OPENERS), f"{who} I want you to {body}, {r.choice(PURPOSES)}.".strip(), r.choice(CLOSERS)] if x)

ROLES = ["teacher", "nurse", "developer", "shop owner", "student", "journalist", "accountant", "photographer", "manager", "researcher"]

SYN = {"send": "email", "email": "send", "search": "look up", "order": "buy", "post": "publish", "please": "kindly",
       "want": "would like", "and": "&", "then": "after that", "the": "that", "for": "to help with", "summarise": "sum up",
       "create": "make", "download": "fetch", "save": "store", "pay": "send money", "transfer": "move"}

def perturb(text: str, r: random.Random) -> str:
    "A paraphrase-like edit: synonyms, a few deletions/insertions, sometimes two clauses swapped."
    w = text.split()
    out = []
    for x in w:
        u = r.random()
        if u < 0.06: continue                                       # delete
        if u < 0.20 and x.lower() in SYN: out.append(SYN[x.lower()]); continue   # substitute
        out.append(x)
        if r.random() < 0.04: out.append(r.choice(["really", "quickly", "also", "just", "now", "please"]))  # insert
    t = " ".join(out)
    for sep in CONNECT:                                            # sometimes two clauses swap places
        if r.random() < 0.3 and sep in t:
            parts = t.split(sep)
            i = r.randrange(len(parts) - 1); parts[i], parts[i + 1] = parts[i + 1], parts[i]
            t = sep.join(parts); break
    return t

def rouge_l(a: str, b: str) -> float:
    "ROUGE-L F1 over lower-cased word tokens (LCS by dynamic programming)."
    x, y = a.lower().split(), b.lower().split()
    if not x or not y: return 0.0
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y, 1): cur.append(prev[j - 1] + 1 if xi == yj else max(prev[j], cur[j - 1]))
        prev = cur
    l = prev[-1]
    if l == 0: return 0.0
    p, rc = l / len(y), l / len(x)
    return 2 * p * rc / (p + rc)

def make_corpus(n: int, pairs: int, seed: int = 0):
    "Texts, and for each planted near-duplicate its original's index (`dup_of`); ROUGE-L of every planted pair."
    r = random.Random(seed)
    texts, dup_of, rouges = [], {}, []
    n_distinct = n - pairs
    for _ in range(n_distinct): texts.append(synth(r))
    planted = []
    while len(planted) < pairs:
        i = r.randrange(n_distinct)
        t = perturb(texts[i], r)
        rl = rouge_l(texts[i], t)
        if rl >= 0.7 and t != texts[i]: planted.append((i, t)); rouges.append(rl)
    # scatter the planted copies after their originals, deterministically
    pos = sorted(r.sample(range(n), pairs))
    out, it, k = [], iter(range(n_distinct)), 0
    order = []
    plan = iter(planted)
    pset = set(pos)
    for slot in range(n):
        if slot in pset: order.append(("dup", next(plan)))
        else: order.append(("orig", next(it)))
    # a planted copy must come after its original: place copies whose original comes later at the end
    idx_of = {}
    final, late = [], []
    for kind, v in order:
        if kind == "orig": idx_of[v] = len(final); final.append(texts[v])
        elif v[0] in idx_of: dup_of[len(final)] = idx_of[v[0]]; final.append(v[1])
        else: late.append(v)
    for i, t in late: dup_of[len(final)] = idx_of[i]; final.append(t)
    return final, dup_of, rouges

def evaluate(texts, dup_of, engine: str, threshold: float, num_perm: int):
    from agentalign.dedup import near_duplicates
    t0, c0 = time.perf_counter(), time.process_time()
    rep = near_duplicates(texts, threshold=threshold, num_perm=num_perm, engine=engine)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    flagged = {i for i, d in enumerate(rep) if d is not None}
    planted = set(dup_of)
    caught = sum(1 for i in planted if i in flagged)
    distinct_flagged = len(flagged - planted)
    # a distinct item flagged as a duplicate of a text it is in fact very close to (ROUGE-L >= 0.7) is no mistake
    close = sum(rouge_l(texts[rep[i][0]], texts[i]) >= 0.7 for i in flagged - planted)
    return {"engine": engine, "items": len(texts), "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2), "planted": len(planted),
            "recall": round(caught / len(planted), 4) if planted else None,
            "precision": round(caught / len(flagged), 4) if flagged else None,
            "distinct_items": len(texts) - len(planted), "distinct_flagged": distinct_flagged,
            "distinct_survival": round(1 - distinct_flagged / (len(texts) - len(planted)), 5),
            "distinct_flagged_rougeL_ge_0.7": close,
            "precision_rougeL": round((caught + close) / len(flagged), 4) if flagged else None}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000); ap.add_argument("--pairs", type=int, default=5_000)
    ap.add_argument("--engine", default="rensa", choices=["rensa", "datasketch", "both"])
    ap.add_argument("--threshold", type=float, default=None); ap.add_argument("--num-perm", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from agentalign.quality import QualityConfig
    d = QualityConfig()
    thr, npm = a.threshold or d.dedup_threshold, a.num_perm or d.dedup_num_perm
    t0 = time.perf_counter()
    texts, dup_of, rouges = make_corpus(a.n, a.pairs, a.seed)
    print(f"corpus: {len(texts)} items, {len(dup_of)} planted near-duplicates (ROUGE-L min {min(rouges):.3f}, "
          f"mean {sum(rouges) / len(rouges):.3f}), built in {time.perf_counter() - t0:.1f}s", flush=True)
    for eng in (["rensa", "datasketch"] if a.engine == "both" else [a.engine]):
        res = evaluate(texts, dup_of, eng, thr, npm)
        print(json.dumps({**res, "threshold": thr, "num_perm": npm}), flush=True)

if __name__ == "__main__":
    main()
