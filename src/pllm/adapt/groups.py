"""Persona-level (group) adapters for cold-start users: users are clustered by the embedding of their
history (k-means over the mean of their items' retrieval-text embeddings), one adapter is trained per
cluster on its members' items, and a user with too few items for a private adapter is routed to the
group whose centroid is nearest their (short) history."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from pllm.adapt.store import AdapterRecord
from pllm.errors import InputError
from pllm.retrieval.embedders import load_embedder
from pllm.tasks.spec import TaskSpec
from pllm.types import ProfileItem


def history_embedding(spec: TaskSpec, embedder_name: str, items: Sequence[ProfileItem]) -> np.ndarray | None:
    """(dim,) unit vector: the mean of the items' embeddings; None for an empty history."""
    if not items:
        return None
    emb = load_embedder(embedder_name)
    vectors = emb.encode([spec.retrieval_text(i) for i in items])  # (N, dim), rows unit length
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else mean.astype(np.float32)


def history_matrix(spec: TaskSpec, embedder_name: str, histories: Iterable[Sequence[ProfileItem]]) -> np.ndarray:
    """(U, dim): one `history_embedding` row per non-empty history."""
    rows = [history_embedding(spec, embedder_name, h) for h in histories]
    return np.stack([r for r in rows if r is not None])


def cluster_users(spec: TaskSpec, users_items: Mapping[str, Sequence[ProfileItem]], n_groups: int, *,
                  embedder: str, seed: int = 0) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """k-means over users' history embeddings -> (group id -> members, group id -> unit centroid)."""
    from sklearn.cluster import KMeans

    users = sorted(u for u, items in users_items.items() if items)
    if n_groups < 1:
        raise InputError("n_groups must be >= 1", field="groups")
    if len(users) < n_groups:
        raise InputError(f"{len(users)} users with items cannot form {n_groups} groups", field="groups")
    matrix = history_matrix(spec, embedder, (users_items[u] for u in users))  # (U, dim)
    labels = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit_predict(matrix)
    members: dict[str, list[str]] = {}
    centroids: dict[str, list[float]] = {}
    for g in range(n_groups):
        gid = f"g{g}"
        rows = [i for i, lab in enumerate(labels) if lab == g]
        if not rows:
            continue
        members[gid] = [users[i] for i in rows]
        centroids[gid] = centroid_of(matrix[rows])
    return members, centroids


def centroid_of(vectors: np.ndarray) -> list[float]:
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return [float(x) for x in (mean / norm if norm > 0 else mean)]


def nearest_group(groups: Sequence[AdapterRecord], items: Sequence[ProfileItem], spec: TaskSpec
                  ) -> AdapterRecord | None:
    """The group adapter whose centroid is most similar (cosine) to the user's history; with no history,
    the largest group (the best guess for a user we know nothing about)."""
    usable = [g for g in groups if g.centroid and g.embedder]
    if not usable:
        return None
    vec = history_embedding(spec, usable[0].embedder or "", items)
    if vec is None:
        return max(usable, key=lambda g: (len(g.members), g.owner))
    sims = [float(np.dot(np.asarray(g.centroid, dtype=np.float32), vec)) for g in usable]
    return usable[int(np.argmax(sims))]
