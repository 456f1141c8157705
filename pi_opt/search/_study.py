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
from pi_opt.techniques.base import PlanInputs, PlannedPhase

STUDY_NAME = "pi-opt"
STALE_ERROR = "worker died (stale trial)"
#: User attr: the trial whose training checkpoints a trial uses (its own number, or the
#: first trial of its retry line), carried into the re-run of a dead trial.
CHECKPOINT_OF = "checkpoint_of"


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


def _train_phases(chain: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                  config: SearchConfig) -> list[tuple[bool, PlannedPhase]]:
    """Per-trial training phases of ``chain`` in order (shared, cached ones left out), each
    with whether its step runs at the ``chain_slack`` budget (a reducer followed by another
    reducer: its reports are not the bucket's)."""
    inputs = PlanInputs(finetune=config.finetune)
    reducers = [i for i, n in enumerate(chain) if TECHNIQUES.get(n).reduces_count]
    out = []
    for i, name in enumerate(chain):
        tech = TECHNIQUES.get(name)(**params.get(name, {}))
        out += [(bool(reducers) and i < reducers[-1], p) for p in tech.plan_phases(inputs)
                if p.kind == "train" and not p.shared]
    return out


def planned_epochs(chain: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                   config: SearchConfig) -> int:
    """Training epochs one trial of ``chain`` with ``params`` (technique -> settings) plans:
    its per-trial phases (shared, cached ones left out; bounds count in full), >= 1. The
    unit of a trial's progress for pruning."""
    return max(1, sum(p.epochs for _, p in _train_phases(chain, params, config)))


def unreported_epochs(chain: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                      config: SearchConfig) -> int:
    """Training epochs one trial of ``chain`` spends before its first report to pruning:
    the phases before the first one that reports at the trial's budget (a step at the
    ``chain_slack`` budget never does)."""
    total = 0
    for slack, p in _train_phases(chain, params, config):
        if p.reports and not slack:
            break
        total += p.epochs
    return total


def grid_order(config: SearchConfig) -> list[ChainSpec]:
    """Chains in the order the grid runs them: harvesting chains, then by the epochs a trial
    trains before pruning can judge it (:func:`unreported_epochs`), then by planned epochs.
    Chains that report early (and so can be stopped early) run first and give the buckets
    finished peers; a chain that trains long unjudged (DeepReShape's HybReNet) then meets
    them at its first report."""
    return sorted(config.techniques, key=lambda c: (
        not harvesting(c, config), unreported_epochs(c.chain, c.params, config),
        planned_epochs(c.chain, c.params, config)))


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
    """Fail trials left RUNNING by a dead single-writer attempt; re-enqueue what they asked,
    with their checkpoint line so the re-run resumes their training
    (an RDB's ``RetryFailedTrialCallback`` copies every user attr itself)."""
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        stale.append(t.number)
        params = {**t.user_attrs.get("fixed", {}), **t.params}
        if "chain" in params:
            carried = {k: t.user_attrs[k] for k in (CHECKPOINT_OF,) if k in t.user_attrs}
            study.enqueue_trial(params, user_attrs={
                "grid": bool(t.user_attrs.get("grid")), "fixed": params, "retry_of": t.number,
                **carried})
    if stale:
        study.set_user_attr("stale_trials", sorted({*study.user_attrs.get("stale_trials", []),
                                                    *stale}))
