"""Early stopping of trials per budget bucket (Optuna's pruners are single-objective only).

A trial reports the validation accuracy of its network after every training epoch in
which that network meets the trial's budget: mask-search epochs at the budget (AutoReP),
DeepReDuce's training, fine-tunes (not DeepReShape's HybReNet training, nor a chain step
run at the ``chain_slack`` budget: those networks hold more ReLUs). Each report is stored at
the trial's **progress**: its training epochs so far (every phase and technique of its
chain; shared, cached computations such as stage criticality left out) over the epochs
it plans (``_study.planned_epochs``), so a 28-epoch AutoReP trial and an 8-epoch
DeepReDuce trial are compared at the same fraction of their work. The curves live in the
trial's user attrs (``curves``: ``"<budget>" -> [[progress, accuracy], ...]``).

A trial is compared with the finished trials of the same budget bucket, whatever their
chain, on best-so-far accuracy at its current progress: a complete peer votes with its
best report up to that progress (it abstains while it had none yet), a pruned peer only
up to the progress it reached. Harvesting trials (one SNL descent for every budget) are
never pruned and never vote: their epochs are not one bucket's.

* ``median``: stop when below the median of the votes.
* ``halving``: successive halving; at the rungs ``1/eta^k`` of progress (k >= 1) stop
  unless in the top ``1/eta`` of the votes (itself included).

Fewer than ``min_peers`` votes never prune; neither does progress below ``warmup``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Literal

PruningMode = Literal["none", "median", "halving"]
CURVES = "curves"
#: user attr of a trial whose reports do not vote (a harvesting descent)
NO_VOTE = "harvesting"
Point = Sequence[float]  # (progress in (0, ~1], validation accuracy)
EPS = 1e-9


def bucket_key(budget: int) -> str:
    """Storage key of a budget's bucket (the count as a decimal string)."""
    return str(int(budget))


def best_until(curve: Sequence[Point], progress: float) -> float | None:
    """Best accuracy of ``curve`` reported at or before ``progress`` (None: no report yet)."""
    accs = [a for p, a in curve if p <= progress + EPS]
    return max(accs) if accs else None


def votes_at(peers: Iterable[tuple[Sequence[Point], float]], progress: float) -> list[float]:
    """Votes at ``progress`` of peers ``(curve, reached)``; ``reached``: the progress a pruned
    peer got to (``inf`` for a complete one)."""
    out = []
    for curve, reached in peers:
        v = best_until(curve, progress)
        if v is not None and reached >= progress - EPS:
            out.append(v)
    return out


def _crossed_rung(before: float, now: float, eta: int) -> bool:
    """Whether a rung ``1/eta^k`` (k >= 1) lies in ``(before, now]``."""
    if now <= 0:
        return False
    k = max(1, math.ceil(-math.log(now, eta) - EPS))  # smallest k with 1/eta^k <= now
    return 1 / eta ** k > before + EPS


def should_prune(mode: PruningMode, mine: Sequence[Point],
                 peers: Iterable[tuple[Sequence[Point], float]], *,
                 min_peers: int, eta: int = 3, warmup: float = 0.0) -> bool:
    """Whether a trial whose bucket curve so far is ``mine`` (``(progress, accuracy)`` pairs,
    the last one just reported) stops; ``peers`` as in :func:`votes_at`."""
    if mode == "none" or not mine:
        return False
    now = mine[-1][0]
    if now < warmup - EPS:
        return False
    votes = votes_at(peers, now)
    if len(votes) < min_peers:
        return False
    me = max(a for _, a in mine)
    if mode == "median":
        return me < statistics.median(votes)
    before = mine[-2][0] if len(mine) > 1 else 0.0
    if not _crossed_rung(before, now, eta):
        return False
    pool = sorted([*votes, me], reverse=True)
    return me < pool[max(1, len(pool) // eta) - 1]


def peer_curves(trials: Iterable[Any], key: str) -> list[tuple[list[Point], float]]:
    """``(curve, reached)`` of ``key`` held by finished ``trials`` (FrozenTrials) for their
    own budget only, harvesting trials left out; ``reached`` is ``inf`` for a complete
    trial, else its last reported progress."""
    budget = int(key)
    out: list[tuple[list[Point], float]] = []
    for t in trials:
        curve = t.user_attrs.get(CURVES, {}).get(key)
        if (curve and int(t.params.get("budget", -1)) == budget
                and not t.user_attrs.get(NO_VOTE)):
            complete = t.state.name == "COMPLETE"
            out.append(([tuple(p) for p in curve], math.inf if complete else curve[-1][0]))
    return out


#: user attr of a grid trial that was not run (the reason, see :func:`skip_reason`)
SKIPPED = "skipped"


def skip_reason(budget: int, chain_trials: Iterable[Any],
                points: Sequence[tuple[int, float]], finished: Sequence[Any]) -> str | None:
    """Why a grid trial of a chain at ``budget`` need not run, else None (cross-budget
    skipping; the grid runs each chain's budgets largest first).

    ``chain_trials``: finished grid trials (FrozenTrials) of the same chain; the latest one
    run (not skipped) at the nearest larger budget decides. ``points``: ``(relus, val
    accuracy)`` of the study's complete, feasible points; ``finished``: every finished trial
    (the bucket peers). Skip when that trial

    * was pruned behind a complete peer of its bucket with no more ReLUs (at the progress
      it reached, the peer's best report was higher): another chain dominated this one at
      the larger budget; a chain pruned with fewer ReLUs than the peers that beat it
      (DeepReDuce undershoots its budget) still runs; or
    * completed with ``r`` ReLUs and validation accuracy ``a`` at budget ``B``, and some
      point has at most ``r * budget / B`` ReLUs and an accuracy above ``a``: fewer ReLUs
      do not raise a chain's accuracy, so the chain's point at ``budget`` (about that many
      ReLUs, at most ``a``) would be dominated. A chain that undershoots its budget is
      expected to undershoot by the same factor.
    """
    larger = sorted((t for t in chain_trials if int(t.params.get("budget", -1)) > budget
                     and not t.user_attrs.get(SKIPPED)),
                    key=lambda t: (int(t.params["budget"]), -t.number))  # nearest, latest
    if not larger:
        return None
    t = larger[0]
    big = int(t.params["budget"])
    relus, acc = t.user_attrs.get("relus"), t.user_attrs.get("val_accuracy")
    if relus is None or acc is None:
        return None
    if t.state.name == "PRUNED":
        peer = _leaner_peer_ahead(t, finished)
        return None if peer is None else (
            f"pruned at budget {big} (trial {t.number}, {relus} ReLUs) behind trial "
            f"{peer.number} with {peer.user_attrs['relus']} ReLUs")
    expected = relus * budget / big
    better = [(r, a) for r, a in points if r <= expected and a > acc]
    if not better:
        return None
    r, a = min(better)
    return (f"dominated: at budget {big} it reached {acc:.4f} with {relus} ReLUs; "
            f"a point with {r} <= {expected:.0f} ReLUs has {a:.4f}")


def _leaner_peer_ahead(pruned: Any, finished: Sequence[Any]) -> Any | None:
    """A complete, voting trial of ``pruned``'s bucket with no more ReLUs whose best report up
    to the progress ``pruned`` reached beats ``pruned``'s best, else None."""
    key = bucket_key(int(pruned.params["budget"]))
    mine = pruned.user_attrs.get(CURVES, {}).get(key)
    if not mine:
        return None
    reached, best = mine[-1][0], max(a for _, a in mine)
    for t in finished:
        curve = t.user_attrs.get(CURVES, {}).get(key)
        if (t.state.name == "COMPLETE" and curve and not t.user_attrs.get(NO_VOTE)
                and bucket_key(int(t.params.get("budget", -1))) == key
                and t.user_attrs.get("relus", math.inf) <= pruned.user_attrs["relus"]):
            theirs = best_until(curve, reached)
            if theirs is not None and theirs > best:
                return t
    return None
