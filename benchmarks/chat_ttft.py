"""Chat time to first token with and without the per-user prefix cache (`pllm serve --prefix-cache-users N`).

A `pllm serve` process (serve_load's `Server`, embedded SmolLM2, bm25 memories) answers streamed chats: each
of C users holds a conversation of T turns under a ~200-token personal preamble (the system turn), with 4
retrieved memories in front of each new message. TTFT is the time from sending a request to its first
non-empty content delta; tok/s per request is its completion tokens over its whole time. C conversations run
at once and the server generates one answer at a time, so queueing is part of TTFT at C > 1. The same
conversations run against a server with the cache off and one with it on (each a fresh store).

    python benchmarks/chat_ttft.py --concurrency 1 4 --turns 4 --out docs/results/adapters/chat_ttft.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's helpers
from serve_load import TOPICS, Server, pct  # noqa: E402

QUESTIONS = ["What should I cook tonight?", "And what could I watch after dinner?",
             "Which book would go with that?", "Plan my weekend around all of that.",
             "What should I pack for it?", "Any last advice?"]


def preamble(user: str) -> str:
    """A fixed ~200-token personal system turn (the part that repeats in every turn of the user's chat)."""
    likes = "; ".join(f"in {topic} they like {words}" for topic, words in TOPICS.items())
    return (f"You are the personal assistant of {user}. Answer briefly and warmly, in plain sentences, and use "
            f"what you know about them. About {user}: {likes}.")


async def one_turn(http: Any, model: str, user: str, messages: list[dict[str, str]], max_tokens: int
                   ) -> dict[str, Any]:
    body = {"model": model, "user": user, "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, pieces, usage = time.perf_counter(), None, [], {}
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    pieces.append(choice["delta"]["content"])
    total = time.perf_counter() - start
    return {"ttft_s": (first or time.perf_counter()) - start, "total_s": total, "text": "".join(pieces),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens", 0)}


async def conversation(http: Any, model: str, user: str, turns: int, max_tokens: int) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": preamble(user)}]
    out = []
    for t in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[t % len(QUESTIONS)]})
        res = await one_turn(http, model, user, messages, max_tokens)
        messages.append({"role": "assistant", "content": res["text"]})
        out.append({"turn": t + 1, **res})
    return out


async def drive(server: Server, key: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=600) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        await one_turn(http, model, "warm-up", [{"role": "user", "content": "hello"}], 4)  # first forward pass
        result = {}
        for c in args.concurrency:
            users = [f"c{c}-u{j}" for j in range(c)]  # the same names in both runs: the same prompts
            for u in users:
                items = [{"id": t, "text": f"I like {w}"} for t, w in TOPICS.items()]
                (await http.post(f"/v1/users/{u}/items", json={"items": items})).raise_for_status()
            runs = await asyncio.gather(*[conversation(http, model, u, args.turns, args.max_tokens) for u in users])
            turns = [t for run in runs for t in run]
            later = [t for t in turns if t["turn"] > 1]
            result[str(c)] = {
                "first_turn_ttft_s": round(statistics.median(t["ttft_s"] for t in turns if t["turn"] == 1), 3),
                "later_turns_ttft_p50_s": round(pct([t["ttft_s"] for t in later], 50) or 0, 3),
                "later_turns_ttft_p90_s": round(pct([t["ttft_s"] for t in later], 90) or 0, 3),
                "tok_per_s_per_request_p50": round(pct([t["completion_tokens"] / t["total_s"] for t in turns], 50)
                                                   or 0, 2),
                "prompt_tokens_mean_later_turns": round(statistics.mean(t["prompt_tokens"] for t in later), 1),
                "texts": [[t["text"] for t in run] for run in runs]}
            print(label, c, json.dumps({k: v for k, v in result[str(c)].items() if k != "texts"}), file=sys.stderr)
        return result


def measure(cache_users: int, args: argparse.Namespace) -> dict[str, Any]:
    from pllm.serve.auth import KeyStore
    from pllm.users.store import SQLiteUserStore

    with tempfile.TemporaryDirectory(prefix="pllm-chat-ttft-") as tmp:
        db = Path(tmp) / "store.sqlite3"
        with SQLiteUserStore(db) as store:
            key = KeyStore(store).create(tenant="bench")[0]
        server = Server(str(db), {"embedder": None, "retriever": "bm25", "torch_threads": args.torch_threads,
                                  "prefix_cache_users": cache_users}, Path(tmp))
        try:
            server.wait_ready(600)
            return asyncio.run(drive(server, key, args, f"cache{cache_users}"))
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="chats at once")
    p.add_argument("--turns", type=int, default=4, help="turns per conversation")
    p.add_argument("--max-tokens", type=int, default=32, help="answer tokens per turn")
    p.add_argument("--cache-users", type=int, default=64, help="--prefix-cache-users of the cached server")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    runs = {"uncached": measure(0, args), "cached": measure(args.cache_users, args)}
    same = all(runs["uncached"][c]["texts"] == runs["cached"][c]["texts"] for c in runs["cached"])
    result = {"benchmark": "chat_ttft", "machine": f"{os.cpu_count()} cpus, shared (load average "
              f"{os.getloadavg()[0]:.1f} at the end)", "turns": args.turns, "max_tokens": args.max_tokens,
              "torch_threads": args.torch_threads, "same_answers_cached_and_uncached": same, **runs}
    print(json.dumps(result, indent=2))
    print("\n| chats at once | first turn TTFT | later turns TTFT p50 (uncached / cached) | tok/s per request |")
    print("|---|---|---|---|")
    for c in runs["cached"]:
        u, k = runs["uncached"][c], runs["cached"][c]
        cells = [f"{u[f]} / {k[f]}" for f in ("first_turn_ttft_s", "later_turns_ttft_p50_s",
                                                   "tok_per_s_per_request_p50")]
        print(f"| {c} | {cells[0]} s | {cells[1]} s | {cells[2]} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
