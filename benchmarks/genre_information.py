"""How much of the movielens-genre label a `stats+crowd` prompt carries, and how much of it the learned model reads.

    python benchmarks/genre_information.py ~/.cache/pllm/bench-tasks/movielens-genre-time-s0-u320-q1 \
        --cells docs/results/learned-crowd-genre-modules/bench/cells \
        --out docs/results/learned-crowd-genre-modules/information.json

The label is a deterministic rule over the user's history (`pllm.data.movielens_genre`: among the movie's genres,
the one the user most often rated 4-5 before). Three rules bound what a model could score, per split:
- `lines_shown`: reads only what the prompt shows: the item's tags from other users (the crowd line) and the
  user's top 5 tags with their shares (the stats line); among the crowd's tags, the user's most frequent shown one.
- `item_user_favourite`: the same with all of the user's tag counts (the registered baseline).
- `label_rule_on_profile`: the label's own rule over the profile items' genres and ratings, among the crowd's
  tags: what the prompt does not show. Its misses are the questions whose answer no other user gave.
- `cf_neighbours`: among the crowd's tags, the one the user gave most to the items `cf@4` retrieves (the user's
  items nearest by other users' co-ratings, through the pipeline's own retrieval); `either_oracle` counts a
  question right when `lines_shown` or `cf_neighbours` is: the most `cf@4` could add to the two lines.
With `--cells`, the logged `ft+stats+crowd` cell of each split is paired against `lines_shown`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pllm.data.movielens_genre import LIKED
from pllm.io import atomic_write_json
from pllm.models import load_generator
from pllm.pipeline import MethodConfig, Personalizer
from pllm.stats import paired_mean_difference, proportion_interval
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import TaskSpec, load_task_spec
from pllm.types import Question

Rule = Callable[[Question, Counter[str]], str | None]
CF_K = 4


def rules(spec: TaskSpec) -> dict[str, Rule]:
    """Each rule picks among the item's tags from other users (`item`), ties to the item's more frequent tag."""

    def own(q: Question) -> Counter[str]:
        return Counter(o for o in (spec.output_of(p) for p in q.profile) if o is not None)

    def pick(item: Counter[str], weight: Callable[[str], float]) -> str | None:
        return min(item, key=lambda lab: (-weight(lab), -item[lab], lab)) if item else None

    def lines_shown(q: Question, item: Counter[str]) -> str | None:
        shown = dict(sorted(own(q).items(), key=lambda kv: (-kv[1], kv[0]))[:5])  # `output_stats`: top 5
        return pick(item, lambda lab: shown.get(lab, 0))

    def item_user_favourite(q: Question, item: Counter[str]) -> str | None:
        counts = own(q)
        return pick(item, lambda lab: counts[lab])

    def label_rule_on_profile(q: Question, item: Counter[str]) -> str | None:
        liked: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        for p in q.profile:
            for g in (s.strip() for s in str(p.fields.get("genres", "")).split(",")):
                seen[g] += 1
                liked[g] += float(p.fields.get("rating", 0)) >= LIKED
        return pick(item, lambda lab: liked[lab] + seen[lab] / 1e6)

    return {"lines_shown": lines_shown, "item_user_favourite": item_user_favourite,
            "label_rule_on_profile": label_rule_on_profile}


def _iv(x: object) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in vars(x).items()}


def measure(task_dir: Path, cells: Path | None, limit: int, splits: Sequence[str]) -> dict:
    spec = load_task_spec(task_dir / "task.yaml")
    train = read_questions(task_dir / "train_questions.json", outputs=task_dir / "train_outputs.json")
    method = MethodConfig(retriever="cf", k=CF_K, stats=True, crowd=True)
    crowd = method.crowd_from(spec, train)
    # the pipeline's own cf@4 retrieval (the generator only counts prompt tokens here; nothing is generated)
    retrieval = Personalizer(spec, load_generator("hf"), method, crowd=crowd)
    ruleset = rules(spec)
    out: dict = {"task_dir": str(task_dir), "limit": limit, "splits": {}}
    for split in splits:
        qs = read_questions(task_dir / f"{split}_questions.json", outputs=task_dir / f"{split}_outputs.json")[:limit]
        items = [Counter(crowd.answers(q)) for q in qs]
        hits = {name: [rule(q, item) == q.target for q, item in zip(qs, items, strict=True)]
                for name, rule in ruleset.items()}
        near = [Counter(spec.output_of(p) for p in retrieval.retrieve(q)) for q in qs]
        cf = [min(i, key=lambda lab, n=n: (-n[lab], -i[lab], lab)) if i else None for i, n in zip(items, near,
                                                                                                  strict=True)]
        hits["cf_neighbours"] = [c == q.target for c, q in zip(cf, qs, strict=True)]
        hits["either_oracle"] = [a or b for a, b in zip(hits["lines_shown"], hits["cf_neighbours"], strict=True)]
        row: dict = {"questions": len(qs),
                     "answer_among_crowd_tags": _iv(proportion_interval([q.target in i for q, i in zip(qs, items,
                                                                                                       strict=True)])),
                     **{name: _iv(proportion_interval(h)) for name, h in hits.items()}}
        log = cells / (spec.name + ("" if split == "test" else f"-{split}")) / "ft_stats_crowd_demonstrations.jsonl" \
            if cells else None
        if log and log.is_file():
            logged = {r["id"]: r for r in map(json.loads, log.read_text().splitlines())}
            preds = {i: r["prediction"] for i, r in logged.items()}
            llm = [preds[q.id] == q.target for q in qs]
            shown = ruleset["lines_shown"]
            agree = [preds[q.id] == shown(q, i) for q, i in zip(qs, items, strict=True)]
            # the model's label scores read among the crowd's tags only: does it ever answer outside them?
            inside = [(max(i, key=lambda lab, q=q: logged[q.id]["label_scores"][lab]) if i else preds[q.id])
                      == q.target for q, i in zip(qs, items, strict=True)]
            row["ft+stats+crowd"] = {"cell": str(log), "accuracy": _iv(proportion_interval(llm)),
                                     "minus_lines_shown": _iv(paired_mean_difference(llm, hits["lines_shown"])),
                                     "agrees_with_lines_shown": _iv(proportion_interval(agree)),
                                     "answers_outside_crowd_tags": _iv(proportion_interval(
                                         [preds[q.id] not in i for q, i in zip(qs, items, strict=True)])),
                                     "accuracy_among_crowd_tags_only": _iv(proportion_interval(inside))}
        out["splits"][split] = row
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task_dir", type=Path, help="A built movielens-genre task folder (with train/dev/test outputs).")
    p.add_argument("--cells", type=Path, help="A bench cells folder holding the ft+stats+crowd cell logs.")
    p.add_argument("--limit", type=int, default=300, help="Questions per split (the grids' limit).")
    p.add_argument("--splits", default="dev,test", help="Comma-separated splits.")
    p.add_argument("--out", type=Path, help="Write the result JSON here.")
    args = p.parse_args(argv)
    result = measure(args.task_dir, args.cells, args.limit, args.splits.split(","))
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
