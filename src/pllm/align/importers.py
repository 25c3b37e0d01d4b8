"""Importers that turn public preference data into per-user pairs and preference vectors.

DSP (Cheng et al. 2023): every query is answered in five styles (academy, business, entertainment,
literature, normal). A simulated user who prefers one domain prefers that domain's answer over each
other style, and has the one-hot preference vector of that domain.

HH-RLHF (the DSP repository's helpful/harmless test pairs): two dimensions; the simulated user of a
dimension prefers the higher-scored answer of that dimension's file.

Splits are by query (`query_split`), so the same query never appears in train and test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pllm.align.store import PreferencePair, PreferenceStore, query_split
from pllm.errors import InputError
from pllm.io import sha1_text

DSP_DOMAINS = ("academy", "business", "entertainment", "literature")
DSP_NEUTRAL = "normal"
HH_DIMENSIONS = ("helpful", "harmless")


@dataclass
class DSPQuery:
    """One DSP query with its answer per style."""

    id: str
    query: str
    responses: dict[str, str]


@dataclass
class ImportSummary:
    users: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> {"train": n, "test": n}
    skipped: int = 0


def _read_json_list(path: Path, rows: str) -> list[Any]:
    """A JSON file holding a list (of `rows`, named in the error), with errors that name the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", source=str(path)) from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of {rows}", source=str(path))
    return data


def read_dsp(path: str | Path) -> list[DSPQuery]:
    """Read `domain_specific_preference.test.json`: [{"query": str, "responses": {style: answer}}]."""
    path = Path(path)
    data = _read_json_list(path, "{query, responses}")
    out = []
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("query"), str):
            raise InputError("missing string 'query'", source=str(path), index=i, field="query")
        responses = row.get("responses")
        if not isinstance(responses, dict) or not all(isinstance(v, str) for v in responses.values()):
            raise InputError("'responses' must map style -> answer text", source=str(path), index=i,
                             field="responses")
        out.append(DSPQuery(id="dsp-" + sha1_text(row["query"])[:12], query=row["query"], responses=responses))
    return out


def dsp_pairs(queries: Sequence[DSPQuery], domain: str, *, rejected_per_query: int = 1,
              test_fraction: float = 0.2, seed: int = 0) -> list[PreferencePair]:
    """Pairs of the simulated user who prefers `domain`: its answer over `rejected_per_query` other styles
    (picked deterministically per query, so different queries contrast different styles)."""
    if rejected_per_query < 1:
        raise InputError(f"rejected_per_query must be >= 1, got {rejected_per_query}", field="rejected_per_query")
    pairs = []
    for i, q in enumerate(queries):
        if domain not in q.responses:
            raise InputError(f"no {domain!r} answer", index=i, field="responses")
        mine = q.responses[domain]
        others = sorted(s for s, a in q.responses.items() if s != domain and a.strip() and a.strip() != mine.strip())
        if not others or not mine.strip():
            continue
        start = int(sha1_text(str(seed), q.id, domain)[:8], 16) % len(others)
        picked = [others[(start + k) % len(others)] for k in range(min(rejected_per_query, len(others)))]
        split = query_split(q.id, test_fraction=test_fraction, seed=seed)
        for other in picked:
            pairs.append(PreferencePair(id=f"{q.id}-{domain}-over-{other}", prompt=q.query,
                                        chosen=q.responses[domain], rejected=q.responses[other], query_id=q.id,
                                        split=split, meta={"source": "dsp", "chosen_style": domain,
                                                           "rejected_style": other}))
    return pairs


def import_dsp(pstore: PreferenceStore, path: str | Path, *, domains: Sequence[str] = DSP_DOMAINS,
               rejected_per_query: int = 1, test_fraction: float = 0.2, seed: int = 0,
               user_prefix: str = "dsp-") -> ImportSummary:
    """One simulated user per domain (`dsp-<domain>`): pairs and the domain's one-hot vector."""
    queries = read_dsp(path)
    summary = ImportSummary()
    for domain in domains:
        user = f"{user_prefix}{domain}"
        pairs = dsp_pairs(queries, domain, rejected_per_query=rejected_per_query, test_fraction=test_fraction,
                          seed=seed)
        pstore.add_pairs(pairs, user_id=user)
        pstore.set_vector({d: float(d == domain) for d in domains}, user_id=user)
        summary.users[user] = _count(pairs)
    return summary


def split_hh(text: str) -> tuple[str, str] | None:
    """Split an HH transcript at its last `Assistant:` turn into (dialogue so far, final answer)."""
    marker = "\n\nAssistant:"
    cut = text.rfind(marker)
    if cut < 0:
        return None
    prompt = text[:cut].strip()
    if prompt.startswith("Human:"):
        prompt = prompt[len("Human:"):].strip() if prompt.count("\n\nHuman:") == 0 else prompt
    return prompt, text[cut + len(marker):].strip()


def hh_pairs(path: str | Path, dimension: str, *, limit: int | None = None, test_fraction: float = 0.2,
             seed: int = 0) -> tuple[list[PreferencePair], int]:
    """Pairs from one HH file (`{"text": [a, b], "score": [sa, sb]}`, higher preferred); returns (pairs, skipped)."""
    path = Path(path)
    rows = _read_json_list(path, "{text: [a, b], score: [sa, sb]}")
    pairs: list[PreferencePair] = []
    skipped = 0
    for i, row in enumerate(rows):
        if limit is not None and len(pairs) >= limit:
            break
        text, score = _hh_row(row, path, i)
        a, b = split_hh(text[0]), split_hh(text[1])
        if a is None or b is None or a[0] != b[0] or score[0] == score[1] or a[1] == b[1] or not a[1] or not b[1]:
            skipped += 1  # different contexts, a tie, or an empty answer: no usable preference
            continue
        (prompt, ans_a), (_, ans_b) = a, b
        chosen, rejected = (ans_a, ans_b) if score[0] > score[1] else (ans_b, ans_a)
        qid = "hh-" + sha1_text(prompt)[:12]
        pairs.append(PreferencePair(id=f"{dimension}-{i}", prompt=prompt, chosen=chosen, rejected=rejected,
                                    query_id=qid, split=query_split(qid, test_fraction=test_fraction, seed=seed),
                                    meta={"source": f"hh-{dimension}", "row": i}))
    return pairs, skipped


def import_hh(pstore: PreferenceStore, files: dict[str, str | Path], *, limit: int | None = None,
              test_fraction: float = 0.2, seed: int = 0, user_prefix: str = "hh-") -> ImportSummary:
    """One simulated user per HH dimension (`hh-helpful`, `hh-harmless`), one-hot over the dimensions."""
    summary = ImportSummary()
    dims = list(files)
    for dim, path in files.items():
        pairs, skipped = hh_pairs(path, dim, limit=limit, test_fraction=test_fraction, seed=seed)
        user = f"{user_prefix}{dim}"
        pstore.add_pairs(pairs, user_id=user)
        pstore.set_vector({d: float(d == dim) for d in dims}, user_id=user)
        summary.users[user] = _count(pairs)
        summary.skipped += skipped
    return summary


def _hh_row(row: Any, path: Path, i: int) -> tuple[list[str], list[float]]:
    if not isinstance(row, dict):
        raise InputError("expected an object", source=str(path), index=i)
    text, score = row.get("text"), row.get("score")
    if not (isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)):
        raise InputError("'text' must be a list of two strings", source=str(path), index=i, field="text")
    if not (isinstance(score, list) and len(score) == 2 and all(isinstance(s, (int, float)) for s in score)):
        raise InputError("'score' must be a list of two numbers", source=str(path), index=i, field="score")
    return text, [float(s) for s in score]


def _count(pairs: Sequence[PreferencePair]) -> dict[str, int]:
    return {"train": sum(p.split == "train" for p in pairs), "test": sum(p.split == "test" for p in pairs)}
