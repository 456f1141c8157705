"""The job's Optuna study: storage, sampler, the seeded grid and recovery of dead trials.

Only Optuna's public API is used: dead trials are failed with ``study.tell`` and
their parameters re-enqueued; enqueued parameters are kept in the trial's user attrs
(``fixed``) so a retry knows what was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal
from optuna.trial import TrialState

from pi_opt.search._config import ChainSpec, SearchConfig
from pi_opt.techniques import TECHNIQUES
from pi_opt.techniques.base import PlanInputs

STUDY_NAME = "pi-opt"
STALE_ERROR = "worker died (stale trial)"


def make_storage(storage: str | None, workdir: Path) -> optuna.storages.BaseStorage:
    """Optuna storage of a job: ``<workdir>/optuna.journal`` when ``storage`` is None, else
    an RDB at the URL ``storage`` (10 s heartbeats, a failed trial retried up to 2 times)."""
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(str(workdir / "optuna.journal"))
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(
        storage, heartbeat_interval=10, grace_period=40,
        failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2),
        engine_kwargs={"pool_pre_ping": True},
    )


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by ``config.sampler`` (NSGA-II, random, else multivariate
    TPE), seeded with ``config.seed``.
    """
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=config.seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.TPESampler(seed=config.seed, multivariate=True)


def harvesting(chain: ChainSpec, config: SearchConfig) -> bool:
    """One run of this chain yields every budget (a lone technique with ``harvests``)."""
    return config.harvest and len(chain.chain) == 1 and TECHNIQUES.get(chain.chain[0]).harvests


def planned_epochs(chain: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                   config: SearchConfig) -> int:
    """Training epochs one trial of ``chain`` with ``params`` (technique -> settings) plans:
    its per-trial phases (shared, cached ones left out; bounds count in full), >= 1. The
    unit of a trial's progress for pruning."""
    inputs = PlanInputs(finetune=config.finetune)
    total = 0
    for name in chain:
        tech = TECHNIQUES.get(name)(**params.get(name, {}))
        total += sum(p.epochs for p in tech.plan_phases(inputs)
                     if p.kind == "train" and not p.shared)
    return max(1, total)


def grid_order(config: SearchConfig) -> list[ChainSpec]:
    """Chains in the order the grid runs them: harvesting chains, then by planned epochs
    (cheapest first, so each budget bucket holds finished peers before the costly trials
    that pruning can stop)."""
    return sorted(config.techniques, key=lambda c: (
        not harvesting(c, config), planned_epochs(c.chain, c.params, config)))


def seed_grid(study: optuna.Study, config: SearchConfig, budgets: list[int]) -> None:
    """Enqueue default-hyperparameter trials once per job: one per (chain, budget), or one
    per chain (at the smallest budget; the descent yields the others) for harvesting chains,
    in :func:`grid_order`. Budgets run largest first, so a smaller budget can warm-start
    from a larger one."""
    if study.user_attrs.get("seeded"):
        return
    for c in grid_order(config):
        for b in ([min(budgets)] if harvesting(c, config) else sorted(budgets, reverse=True)):
            params = {"chain": c.label, "budget": b}
            study.enqueue_trial(params, user_attrs={"grid": True, "fixed": params},
                                skip_if_exists=True)
    study.set_user_attr("seeded", True)
    study.set_user_attr("config", json.loads(config.model_dump_json()))


def recover_stale(study: optuna.Study) -> None:
    """Fail trials left RUNNING by a dead single-writer attempt; re-enqueue what they asked."""
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        stale.append(t.number)
        params = {**t.user_attrs.get("fixed", {}), **t.params}
        if "chain" in params:
            study.enqueue_trial(params, user_attrs={
                "grid": bool(t.user_attrs.get("grid")), "fixed": params, "retry_of": t.number})
    if stale:
        study.set_user_attr("stale_trials", sorted({*study.user_attrs.get("stale_trials", []),
                                                    *stale}))
