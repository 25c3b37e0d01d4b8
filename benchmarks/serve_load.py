"""Load test of `pllm serve` on loopback: memory add / search / delete from concurrent clients and chat
completions with the embedded model, then a check, straight from the store, that every acknowledged write
is present and every acknowledged delete is gone.

The server runs as its own process (uvicorn through `pllm.serve.app:app_from_env`) bound to 127.0.0.1, on
a store in a temp folder; clients are asyncio httpx clients in this process. Every phase is bounded in
requests and in time. The baseline, measured in the same run, is the same searches done in-process on the
server's own index type (no HTTP, no auth, no store), so `http_over_inprocess` is what serving adds.

    python benchmarks/serve_load.py                  # 100 users x 100 items, MiniLM, embedded SmolLM2
    python benchmarks/serve_load.py --quick          # 20 users x 50 items, fewer requests
    python benchmarks/serve_load.py --embedder hash  # hashed bag-of-words embedder (no model) for memory

Scaling out: `--store postgresql://...` (each run in a fresh schema, dropped afterwards) and `--workers 1 2`
(uvicorn workers on one port, as `pllm serve --workers`); several stores and worker counts run one after
another in the same invocation. `--kill-worker` SIGKILLs one of two workers a third of the way into the mixed phase
and reports the acknowledged writes lost (from the store) and the requests served after the kill.

    python benchmarks/serve_load.py --quick --embedder hash --chats 0 --workers 1 2 \
        --store sqlite postgresql://pllm:pllm@127.0.0.1/pllm_bench
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pllm.retrieval.embedders import EMBEDDERS, Embedder  # noqa: E402

TOPICS = {
    "movies": "film director actor plot sequel trailer cinema thriller comedy drama soundtrack villain hero",
    "food": "recipe pasta tomato garlic basil oven bake sauce spicy dessert chocolate bread soup salad",
    "travel": "hotel flight beach mountain museum island airport luggage hiking train passport coast ferry",
    "tech": "laptop battery screen keyboard software camera phone charger processor wireless headphones",
    "books": "novel author chapter poetry biography library fiction mystery romance history translation",
    "sports": "football match team coach goal season league training marathon tennis stadium referee",
    "home": "garden sofa lamp kitchen vacuum mattress pillow curtains paint drill shelf plants furniture",
    "health": "doctor nurse sleep running yoga vitamins allergy dentist gym stretching diet water",
}
FILLERS = "i my really love like hate prefer usually always never often bought tried want need think".split()


class HashEmbedder(Embedder):
    """Hashed bag of words (sha1 buckets), 256-d: a stand-in that costs no model time."""

    def __init__(self, dim: int = 256) -> None:
        self.name, self.dim = f"bench-hash-{dim}", dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.sha1(tok.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        n[n == 0] = 1
        return out / n


EMBEDDERS.register("bench-hash", HashEmbedder, replace=True)  # the server imports this module as a plugin


def memory_text(rng: random.Random) -> str:
    topic = rng.choice(list(TOPICS))
    words = TOPICS[topic].split()
    return " ".join(rng.choice(FILLERS) if rng.random() < 0.4 else rng.choice(words) for _ in range(rng.randint(8, 16)))


def query_pool(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.sample(TOPICS[rng.choice(list(TOPICS))].split(), 3)) for _ in range(n)]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, store: str, config: dict[str, Any], log_dir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT / "src"),
                                                             os.environ.get("PYTHONPATH", "")]),
               "PLLM_SERVE_PLUGINS": "serve_load", "PLLM_SERVE_CONFIG": json.dumps({"db": store, **config})}
        self.log = log_dir / f"server-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "pllm.serve.app:app_from_env", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", "--no-access-log",
                 *(["--workers", str(workers)] if workers > 1 else [])],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def pids(self) -> list[int]:
        """The server's processes: the supervisor and, with several workers, each worker."""
        return [self.proc.pid, *children(self.proc.pid)]

    def wait_ready(self, timeout: float) -> float:
        import httpx

        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def children(pid: int) -> list[int]:
    """Child processes of `pid` (Linux /proc; empty elsewhere)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU time of processes (Linux /proc), or None where unavailable."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    return total


SERVER: Server | None = None


async def run_phase(n_requests: int, concurrency: int, time_limit: float, make_request) -> dict[str, Any]:  # noqa: ANN001
    """`concurrency` workers issue up to `n_requests` requests in total, stopping at `time_limit` seconds.
    CPU per request (server process, and this client process) says what the load costs whatever the
    machine's other load; wall-clock numbers depend on it."""
    pids = SERVER.pids() if SERVER else []
    server_cpu0 = cpu_seconds(pids) if pids else None
    client_cpu0 = time.process_time()
    latencies: list[float] = []
    codes: dict[str, int] = {}
    counter = iter(range(n_requests))
    start = time.perf_counter()

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() - start > time_limit:
                return
            t0 = time.perf_counter()
            try:
                status = await make_request(i)
            except Exception as exc:  # noqa: BLE001 - counted as an error, the run goes on
                status = type(exc).__name__
            dt = time.perf_counter() - t0
            codes[str(status)] = codes.get(str(status), 0) + 1
            if isinstance(status, int) and 200 <= status < 300:
                latencies.append(dt)

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - start
    print(f"  {sum(codes.values())} requests in {wall:.1f} s: {codes}", file=sys.stderr, flush=True)
    ok = len(latencies)
    n = max(1, sum(codes.values()))
    server_cpu1 = cpu_seconds([p for p in pids if Path(f"/proc/{p}").exists()]) if pids else None
    server_cpu = (server_cpu1 - server_cpu0) if server_cpu0 is not None and server_cpu1 is not None else None
    return {"requests": sum(codes.values()), "ok": ok, "errors": sum(codes.values()) - ok, "status_counts": codes,
            "wall_s": round(wall, 3), "throughput_rps": round(ok / wall, 1) if wall else None,
            "p50_ms": _ms(pct(latencies, 50)), "p99_ms": _ms(pct(latencies, 99)),
            "server_cpu_ms_per_request": None if server_cpu is None else round(server_cpu / n * 1000, 2),
            "client_cpu_ms_per_request": round((time.process_time() - client_cpu0) / n * 1000, 2)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def inprocess_baseline(items: dict[str, list[str]], queries: list[str], embedder_name: str, retriever: str,
                       n: int, seed: int) -> dict[str, Any]:
    """The same searches with no server: the user's index built in this process, timed per query."""
    from pllm.retrieval import DenseIndex, Doc, embed_with_cache, load_embedder, make_retriever
    from pllm.retrieval.embedders import l2_normalize

    rng = random.Random(seed)
    # Per-search cost depends on one user's items, not on how many users there are: index 10 users only.
    items = {u: items[u] for u in sorted(items)[:10]}
    emb = load_embedder(embedder_name) if retriever == "dense" else None
    indexes: dict[str, Any] = {}
    qvec: dict[str, np.ndarray] = {}
    times = []
    for _ in range(n):
        user = rng.choice(list(items))
        q = rng.choice(queries)
        if user not in indexes:
            docs = [Doc(t) for t in items[user]]
            indexes[user] = (DenseIndex(embed_with_cache(emb, [d.text for d in docs], None)) if emb is not None
                             else make_retriever(retriever).build(docs))
        t0 = time.perf_counter()
        if emb is not None:
            if q not in qvec:  # the server caches query vectors per tenant too
                qvec[q] = l2_normalize(emb.encode([q]))[0]
            indexes[user].search_vector(qvec[q], 5)
        else:
            indexes[user].search(q, 5)
        times.append(time.perf_counter() - t0)
    return {"searches": n, "p50_ms": _ms(pct(times, 50)), "p99_ms": _ms(pct(times, 99))}


async def load(args: argparse.Namespace, server: Server, key: str, rng: random.Random) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    users = [f"user{i:03d}" for i in range(args.users)]
    items: dict[str, list[str]] = {u: [memory_text(rng) for _ in range(args.items_per_user)] for u in users}
    acked_writes: dict[tuple[str, str], str] = {}
    acked_deletes: set[tuple[str, str]] = set()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as http:
        # 1. populate: one request per (user, batch); embeddings are computed on write
        batches = [(u, j) for u in users for j in range(0, args.items_per_user, args.batch)]

        async def add_batch(i: int) -> int:
            user, j = batches[i]
            body = {"items": [{"id": f"m{j + n}", "text": t} for n, t in enumerate(items[user][j:j + args.batch])]}
            r = await http.post(f"/v1/users/{user}/items", json=body)
            if r.status_code == 201:
                for d in r.json()["data"]:
                    acked_writes[(user, d["id"])] = d["text"]
            return r.status_code

        out["populate"] = await run_phase(len(batches), args.write_concurrency, args.populate_time_limit, add_batch)
        out["populate"]["items"] = len(acked_writes)
        out["populate"]["items_per_s"] = round(len(acked_writes) / out["populate"]["wall_s"], 1)

        # 2. search from concurrent clients
        queries = query_pool(rng, args.query_pool)
        for retriever in args.retrievers:
            async def search(i: int, retriever: str = retriever) -> int:
                r = await http.get(f"/v1/users/{users[i % len(users)]}/search",
                                   params={"q": queries[(i * 7) % len(queries)], "k": 5, "retriever": retriever})
                return r.status_code

            await run_phase(min(200, args.searches), args.search_concurrency, args.time_limit, search)  # warm-up
            out[f"search_{retriever}"] = await run_phase(args.searches, args.search_concurrency, args.time_limit,
                                                         search)

        # 3. mixed add / search / delete (with --kill-worker: one of two workers SIGKILLed a third of the way in)
        mixed_users = users[: max(1, len(users) // 2)]
        statuses: list[tuple[float, int | str]] = []
        killed: dict[str, Any] = {}

        def kill_one() -> None:
            workers = children(server.proc.pid)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.update(pid=workers[0], at=time.perf_counter())

        async def mixed(i: int) -> int | str:
            if args.kill_worker and i == args.mixed // 3 and not killed:
                kill_one()
            try:
                status = await mixed_op(i)
            except Exception as exc:  # noqa: BLE001 - a request the killed worker held: not acknowledged
                status = type(exc).__name__
            statuses.append((time.perf_counter(), status))
            return status

        async def mixed_op(i: int) -> int:
            user = mixed_users[i % len(mixed_users)]
            op = i % 4
            if op == 0:
                item_id = f"x{i}"
                r = await http.post(f"/v1/users/{user}/items", json={"id": item_id, "text": memory_text(rng)})
                if r.status_code == 201:
                    acked_writes[(user, item_id)] = r.json()["data"][0]["text"]
                return r.status_code
            if op == 1:
                victims = [k for k in acked_writes if k[0] == user and k not in acked_deletes]
                if victims:
                    victim = victims[(i * 31) % len(victims)]
                    r = await http.delete(f"/v1/users/{user}/items/{victim[1]}")
                    if r.status_code == 200:
                        acked_deletes.add(victim)
                    return r.status_code
            r = await http.get(f"/v1/users/{user}/search", params={"q": queries[i % len(queries)], "k": 5})
            return r.status_code

        out["mixed"] = await run_phase(args.mixed, args.search_concurrency, args.time_limit, mixed)
        if args.kill_worker:
            after = [s for t, s in statuses if killed and t >= killed["at"]]
            ok_after = sum(1 for s in after if isinstance(s, int) and 200 <= s < 300)
            out["kill"] = {"killed_pid": killed.get("pid"), "requests_after_kill": len(after), "ok_after": ok_after,
                           "failed_after": len(after) - ok_after,
                           "server_children_at_end": len(children(server.proc.pid))}

        # 4. chat completions with the embedded model (32-token answers), bounded by the server's queue
        if args.chats:
            model = (await http.get("/v1/models")).json()["data"][0]["id"]

            async def chat(i: int) -> int:
                r = await http.post("/v1/chat/completions", json={
                    "model": model, "user": users[i % len(users)], "max_tokens": args.chat_tokens,
                    "messages": [{"role": "user", "content": f"Suggest something about {queries[i % len(queries)]}."}]})
                if r.status_code == 200:
                    usage = r.json()["usage"]
                    chat_tokens.append(usage["completion_tokens"])
                return r.status_code

            chat_tokens: list[int] = []
            await chat(0)  # warm-up (first forward pass)
            out["chat"] = await run_phase(args.chats, args.chat_concurrency, args.time_limit * 4, chat)
            out["chat"]["completion_tokens_mean"] = round(float(np.mean(chat_tokens)), 1) if chat_tokens else None
    out["_items"] = items
    out["_acked_writes"] = acked_writes
    out["_acked_deletes"] = acked_deletes
    out["_queries"] = queries
    return out


def verify(location: str, tenant: str, acked_writes: dict[tuple[str, str], str],
           acked_deletes: set[tuple[str, str]]) -> dict[str, int]:
    """From the store itself (server stopped): acknowledged writes present with their text, deletes gone."""
    from pllm.serve import store_user_id
    from pllm.users.store import open_store

    with open_store(location) as store:
        present: dict[tuple[str, str], str] = {}
        for user in {u for u, _ in acked_writes}:
            for it in store.get_items(user_id=store_user_id(tenant, user)):
                present[(user, it.id)] = it.fields.get("text")
    lost = [k for k, text in acked_writes.items() if k not in acked_deletes and present.get(k) != text]
    resurrected = [k for k in acked_deletes if k in present]
    return {"acked_writes": len(acked_writes), "acked_deletes": len(acked_deletes),
            "lost_acked_writes": len(lost), "resurrected_acked_deletes": len(resurrected)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 users x 50 items, fewer requests")
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--items-per-user", type=int, default=100)
    p.add_argument("--batch", type=int, default=50, help="items per add request while populating")
    p.add_argument("--embedder", default="minilm", help="'minilm' or 'hash' (no model)")
    p.add_argument("--retrievers", nargs="+", default=["dense", "bm25"])
    p.add_argument("--searches", type=int, default=3000)
    p.add_argument("--query-pool", type=int, default=200, help="distinct query strings")
    p.add_argument("--mixed", type=int, default=2000, help="mixed add/search/delete requests")
    p.add_argument("--chats", type=int, default=None, help="chat completions (default 8; --quick: 3)")
    p.add_argument("--chat-tokens", type=int, default=32)
    p.add_argument("--write-concurrency", type=int, default=4)
    p.add_argument("--search-concurrency", type=int, default=4)
    p.add_argument("--chat-concurrency", type=int, default=2)
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase (chat: 4x)")
    p.add_argument("--populate-time-limit", type=float, default=1800.0, help="seconds to fill the store")
    p.add_argument("--synchronous", default="FULL")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads in the server and the baseline")
    p.add_argument("--store", nargs="+", default=["sqlite"],
                   help="'sqlite' (a temp file) and/or postgresql:// URLs (a fresh schema per run); one run each")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="server worker counts; one run each")
    p.add_argument("--kill-worker", action="store_true", help="also run each store with 2 workers, SIGKILLing "
                   "one a third of the way into the mixed phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.items_per_user, args.searches, args.mixed = 20, 50, 600, 400
    if args.chats is None:
        args.chats = 3 if args.quick else 8
    embedder = "bench-hash" if args.embedder == "hash" else args.embedder
    plan = [(store, workers, False) for store in args.store for workers in args.workers]
    plan += [(store, 2, True) for store in args.store] if args.kill_worker else []
    runs = []
    for store, workers, kill in plan:
        args.kill_worker = kill
        print(f"run: store {_store_kind(store)}, {workers} worker(s){', one killed' if kill else ''}",
              file=sys.stderr, flush=True)
        runs.append(run_one(args, store, workers, embedder))
    result = runs[0] if len(runs) == 1 else {
        "benchmark": "serve_load", "machine": runs[-1]["machine"], "config": runs[0]["config"], "runs": runs}
    text = json.dumps(result, indent=2)
    print(text)
    print()
    for run in runs:
        print(f"## store {run['store']}, {run['workers']} worker(s){' (one killed)' if 'kill' in run else ''}")
        print(_table(run, args.retrievers))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


def _store_kind(store: str) -> str:
    return "postgresql" if store.startswith(("postgresql://", "postgres://")) else "sqlite"


def fresh_store(store: str, tmp: Path) -> tuple[str, Any]:
    """A location for one run: a new SQLite file, or a new schema on the PostgreSQL server (and its drop)."""
    if _store_kind(store) == "sqlite":
        return str(tmp / "store.sqlite3"), lambda: None
    import psycopg

    schema = f"pllm_bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return f"{store}{'&' if '?' in store else '?'}options=-csearch_path%3D{schema}", drop


def run_one(args: argparse.Namespace, store: str, workers: int, embedder: str) -> dict[str, Any]:
    from pllm.serve.auth import KeyStore
    from pllm.serve.features import open_with_features

    global SERVER
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="pllm-serve-load-") as tmp:
        location, drop = fresh_store(store, Path(tmp))
        try:
            with open_with_features(location) as opened:
                key = KeyStore(opened).create(tenant="bench")[0]
            server = Server(location, {"embedder": embedder, "retriever": "dense", "synchronous": args.synchronous,
                                       "gen_queue": 8, "max_k": 50, "torch_threads": args.torch_threads},
                            Path(tmp), workers=workers)
            try:
                startup = server.wait_ready(600)
                SERVER = server
                out = asyncio.run(load(args, server, key, rng))
            finally:
                exit_code = server.stop()
                SERVER = None
            items, queries = out.pop("_items"), out.pop("_queries")
            check = verify(location, "bench", out.pop("_acked_writes"), out.pop("_acked_deletes"))
        finally:
            drop()
    import torch

    torch.set_num_threads(args.torch_threads)
    baseline = {r: inprocess_baseline(items, queries, embedder, r, min(args.searches, 2000), args.seed)
                for r in args.retrievers}
    for r in args.retrievers:
        s = out[f"search_{r}"]
        b = baseline[r]
        s["http_over_inprocess_p50"] = round(s["p50_ms"] / b["p50_ms"], 1) if s["p50_ms"] and b["p50_ms"] else None
    return {
        "benchmark": "serve_load",
        "store": _store_kind(store),
        "workers": workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, shared (load average {os.getloadavg()[0]:.1f} "
                   "at the end)",
        "config": {"users": args.users, "items_per_user": args.items_per_user, "embedder": embedder,
                   "search_concurrency": args.search_concurrency, "query_pool": args.query_pool,
                   "chat_tokens": args.chat_tokens, "synchronous": args.synchronous,
                   "torch_threads": args.torch_threads},
        "server_startup_s": round(startup, 1),
        "server_exit_code": exit_code,
        **out,
        "inprocess_baseline": baseline,
        "verification": check,
    }


def _table(result: dict[str, Any], retrievers: list[str]) -> str:
    rows = [("phase", "ok", "errors", "req/s", "p50 ms", "p99 ms", "server CPU ms/req")]
    for name in ["populate", *[f"search_{r}" for r in retrievers], "mixed", "chat"]:
        if name in result:
            r = result[name]
            rows.append((name, str(r["ok"]), str(r["errors"]), str(r["throughput_rps"]), str(r["p50_ms"]),
                         str(r["p99_ms"]), str(r["server_cpu_ms_per_request"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    if "kill" in result:
        k = result["kill"]
        lines.append(f"kill: one of 2 workers SIGKILLed mid-phase; after it {k['ok_after']} of "
                     f"{k['requests_after_kill']} requests ok ({k['failed_after']} failed)")
    v = result["verification"]
    lines.append(f"verification: {v['acked_writes']} acked writes, {v['lost_acked_writes']} lost; "
                 f"{v['acked_deletes']} acked deletes, {v['resurrected_acked_deletes']} came back")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
