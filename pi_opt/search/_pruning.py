"""Early stopping of trials per budget bucket (Optuna's pruners are single-objective only).

Every trial reports its validation accuracy after each fine-tune epoch of a candidate;
the curves live in the trial's user attrs (``curves``: ``"<budget>" -> [acc, ...]``; a
technique that trains in two phases restarts the curve at the second one's epoch 1).
A trial is compared with the finished (complete or pruned) trials of the same budget
bucket, whatever their technique, at the same epoch, on best-so-far accuracy:

* ``median``: stop when below the median of the bucket.
* ``halving``: successive halving; at rungs (epochs 1, eta, eta^2, ...) stop unless in
  the top ``1/eta`` of the bucket (itself included).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Literal

PruningMode = Literal["none", "median", "halving"]
CURVES = "curves"


def bucket_key(budget: int) -> str:
    """Storage key of a budget's bucket (the count as a decimal string)."""
    return str(int(budget))


def _is_rung(epoch: int, eta: int) -> bool:
    r = 1
    while r < epoch:
        r *= eta
    return r == epoch


def should_prune(mode: PruningMode, mine: Sequence[float], peers: Iterable[Sequence[float]], *,
                 min_peers: int, eta: int = 3) -> bool:
    """Whether a trial whose bucket curve so far is ``mine`` (one value per epoch) stops.

    ``peers``: curves of finished trials of the same bucket; only those that reached
    this epoch vote. Fewer than ``min_peers`` voters never prune.
    """
    epoch = len(mine)
    if mode == "none" or epoch == 0:
        return False
    votes = [max(c[:epoch]) for c in peers if len(c) >= epoch]
    if len(votes) < min_peers:
        return False
    me = max(mine)
    if mode == "median":
        return me < statistics.median(votes)
    if not _is_rung(epoch, eta):
        return False
    pool = sorted([*votes, me], reverse=True)
    return me < pool[max(1, len(pool) // eta) - 1]


def peer_curves(trials: Iterable[Any], key: str) -> list[list[float]]:
    """Curves of ``key`` held by ``trials`` (FrozenTrials) for their own budget only
    (a harvesting trial's other budgets belong to the harvested trials)."""
    budget = int(key)
    out = []
    for t in trials:
        curve = t.user_attrs.get(CURVES, {}).get(key)
        if curve and int(t.params.get("budget", -1)) == budget:
            out.append(list(curve))
    return out
