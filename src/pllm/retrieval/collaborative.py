"""Collaborative retrieval: rank a user's items by how *other users* answered them, not by their text.

Which of a user's items a small model is shown barely matters when they are picked by text (random@4 is
about bm25@4 on ratings): two movie titles that share words say little about whether one user rates them
alike. Co-ratings do. `CoRatings` holds many users' answers per item (the train split's, fitted by the
caller) and scores item-item similarity as adjusted cosine, shrunk toward 0 when few users answered both
(Sarwar et al. 2001; the shrinkage of Koren 2008). The `cf` retriever shows the user's items most similar to
the queried one: item-based collaborative filtering's neighbourhood, as demonstrations (the collaborative
retriever of LlamaRec-style two-stage systems, here choosing what the model reads).

Items are matched across users by `Doc.key` and the query text: the same identity (`TaskSpec.item_key`).
The asking user is always left out of the similarities (`user_id`), so a training text's neighbours never
reflect its own answer to the queried item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from scipy import sparse

from pllm.errors import InputError
from pllm.retrieval.base import RETRIEVERS, Doc, Hit, Retriever, SizedIndex


class CoRatings:
    """Item-item similarity from many users' answers (`answers`: item key -> {user: value}).

    With `center`, each user's values are centred on that user's mean first (adjusted cosine: a harsh and a
    generous rater of the same two movies agree); without it (category labels) the vectors are who answered.
    `shrink`: similarity times n / (n + shrink), n the number of users who answered both."""

    def __init__(self, answers: Mapping[str, Mapping[str, float]], *, center: bool = True,
                 shrink: float = 100.0) -> None:
        if shrink < 0:
            raise InputError(f"shrink must be >= 0, got {shrink}", field="shrink")
        self.shrink = shrink
        items = sorted(answers)
        users = sorted({u for by_user in answers.values() for u in by_user})
        self.row = {item: i for i, item in enumerate(items)}
        self.col = {user: j for j, user in enumerate(users)}
        rows, cols, vals = [], [], []
        for item, by_user in answers.items():
            for user, value in by_user.items():
                rows.append(self.row[item])
                cols.append(self.col[user])
                vals.append(float(value))
        r, c, v = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), np.asarray(vals)
        if center and len(v):
            sums = np.bincount(c, weights=v, minlength=len(users))
            counts = np.bincount(c, minlength=len(users))
            v = v - (sums / np.maximum(counts, 1))[c]
        shape = (len(items), len(users))
        self.values = sparse.csr_matrix((v, (r, c)), shape=shape)
        self.present = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=shape)
        self.sq_norm = np.asarray(self.values.multiply(self.values).sum(axis=1)).ravel()

    def __len__(self) -> int:
        return len(self.row)

    def similarity(self, query: str, keys: Sequence[str | None], *, leave_out: str | None = None) -> np.ndarray:
        """Shrunk adjusted-cosine similarity of item `query` to each of `keys`, with user `leave_out`'s answers
        removed from every vector; 0 for an item nobody else answered."""
        out = np.zeros(len(keys))
        q = self.row.get(query)
        found = [(i, self.row[k]) for i, k in enumerate(keys) if k is not None and k in self.row]
        if q is None or not found:
            return out
        at, rows = np.array([i for i, _ in found]), np.array([r for _, r in found])
        vals, pres = self.values[rows], self.present[rows]
        dots = np.asarray((vals @ self.values[q].T).todense()).ravel()
        common = np.asarray((pres @ self.present[q].T).todense()).ravel()
        sq_docs, sq_q = self.sq_norm[rows].copy(), float(self.sq_norm[q])
        j = self.col.get(leave_out) if leave_out is not None else None
        if j is not None:  # take the asker's own answers out of both sides
            own_docs = np.asarray(vals[:, j].todense()).ravel()
            own_q = float(self.values[q, j])
            dots -= own_docs * own_q
            common -= np.asarray(pres[:, j].todense()).ravel() * float(self.present[q, j])
            sq_docs -= own_docs ** 2
            sq_q -= own_q ** 2
        denom = np.sqrt(np.clip(sq_docs, 0, None) * max(sq_q, 0.0))
        cosine = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 1e-12)
        out[at] = cosine * common / (common + self.shrink) if self.shrink else cosine
        return out


class _CFIndex(SizedIndex):
    def __init__(self, keys: list[str | None], coratings: CoRatings, user_id: str | None) -> None:
        super().__init__(len(keys))
        self._keys, self._co, self._user = keys, coratings, user_id

    def _search(self, query: str, k: int, *, query_timestamp: float | None, seed_key: str) -> list[Hit]:
        sims = self._co.similarity(query, self._keys, leave_out=self._user)
        order = sorted(range(len(sims)), key=lambda i: -sims[i])  # stable: ties keep profile order
        return [Hit(index=i, score=float(sims[i])) for i in order[:k]]


class CollaborativeRetriever(Retriever):
    """The user's items most similar to the queried one by other users' answers (`CoRatings`); items nobody
    else answered score 0 and follow in profile order. Needs the fitted co-ratings and the asker's id."""

    name: ClassVar[str] = "cf"
    reads_train: ClassVar[bool] = True

    def __init__(self, coratings: CoRatings | None = None, user_id: str | None = None) -> None:
        if coratings is None:
            raise InputError("retriever 'cf' ranks a user's items by other users' answers: it needs the train "
                             "split's co-ratings (a method with cf@k reads a train split)", field="retriever")
        self.coratings, self.user_id = coratings, user_id

    def build(self, docs: Sequence[Doc]) -> _CFIndex:
        return _CFIndex([d.key for d in docs], self.coratings, self.user_id)


RETRIEVERS.register("cf", CollaborativeRetriever)
