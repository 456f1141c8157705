"""Optuna multi-objective search over technique chains, hyperparameters and budgets.

Objectives: validation accuracy (maximize) and the ReLU count or the cost-model
latency (minimize). Every (chain, budget) pair is enqueued once with default
hyperparameters (the "grid"), so a combined search always contains what each
single technique would produce on its own; the sampler then explores
hyperparameters. SNL-style descents that pass several budgets add their
snapshots as extra, harvested trials.

Resumability: the study lives in ``<workdir>/optuna.journal`` (or an RDB URL for
multi-worker jobs); finished trials are kept, and trials left RUNNING by a dead
attempt are failed and their parameters re-enqueued.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from pi_opt.costmodel import LatencyModel, default_cost_model
from pi_opt.data import load_dataset
from pi_opt.errors import Cancelled, PiOptError
from pi_opt.report.schema import (
    Baseline, MpcMeasurement, ParetoPoint, ParetoReport,
)
from pi_opt.search._baseline import file_lock, obtain_baseline, resolve_spec
from pi_opt.search._config import ChainSpec, SearchConfig
from pi_opt.search._evaluate import evaluate_candidate
from pi_opt.techniques import TECHNIQUES, baseline_candidate
from pi_opt.techniques.base import TechniqueContext
from pi_opt.training._loops import ProgressFn, StopFn

STUDY_NAME = "pi-opt"
COUNTING = (
    "ReLUs are per-sample scalar comparisons: exact ReLU + Circa (truncated-sign) ReLU "
    "elements; identity (linearized) elements count 0; polynomial elements count 0 ReLUs and "
    "1 secure multiplication each (poly_mults); max-pool comparisons are reported separately; "
    "stem ReLU included when the architecture has one. Counted on the saved artifact."
)
#: ``measure(artifact_dir, inputs=test_images) -> MpcMeasurement`` (e.g. ``mpc.measure.make_measure``).
Measure = Callable[..., MpcMeasurement | dict[str, Any]]

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _TrialFailed(Exception):
    """A trial failed for a user-facing reason (recorded in the trial's user attrs)."""


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


def make_storage(storage: str | None, workdir: Path) -> optuna.storages.BaseStorage:
    """Journal file in the job directory by default; RDB (with heartbeats) for a URL."""
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(str(workdir / "optuna.journal"))
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(
        storage, heartbeat_interval=10, grace_period=40,
        failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2),
        engine_kwargs={"pool_pre_ping": True},
    )


def _sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=config.seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.TPESampler(seed=config.seed, multivariate=True)


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "optuna": optuna.__version__}
    try:
        out["pi_opt"] = version("pi-opt")
    except PackageNotFoundError:
        out["pi_opt"] = "dev"
    return out


class SearchSession:
    """One worker's handle on a job: data, baseline, study and technique context."""

    def __init__(
        self, *, config: SearchConfig, workdir: Path, study: optuna.Study,
        ctx: TechniqueContext, baseline: Any, budgets: list[int],
        cost_model: LatencyModel | None, progress: ProgressFn | None, should_stop: StopFn | None,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.study = study
        self.ctx = ctx
        self.baseline = baseline
        self.budgets = budgets
        self.cost_model = cost_model
        self.progress = progress
        self.should_stop = should_stop
        self.chains = {c.label: c for c in config.techniques}
        self.total = config.n_trials or len(self.chains) * len(budgets)
        self.started = time.time()

    # ---- construction ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        config: SearchConfig,
        *,
        workdir: Path | str,
        storage: str | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> SearchSession:
        """Load data, obtain the baseline, open (or create) the study and seed its grid."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        emit = progress or (lambda e: None)
        emit({"type": "phase", "phase": "data"})
        data = load_dataset(config.data)
        spec = resolve_spec(config, data)
        emit({"type": "phase", "phase": "baseline"})
        baseline = obtain_baseline(config, spec, data, workdir, progress=progress,
                                   should_stop=should_stop)
        budgets = config.absolute_budgets(baseline.manifest.profile.relus)
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=make_storage(storage, workdir),
            directions=["maximize", "minimize"], sampler=_sampler(config), load_if_exists=True)
        with file_lock(workdir / ".study.lock"):
            if storage is None:  # single-writer journal: RUNNING trials belong to a dead attempt
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    study._storage.set_trial_user_attr(t._trial_id, "error",
                                                       "worker died (stale trial)")
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    params = {**t.system_attrs.get("fixed_params", {}), **t.params}
                    if "chain" in params:
                        study.enqueue_trial(params, user_attrs={
                            k: v for k, v in t.user_attrs.items() if k == "grid"}
                            | {"retry_of": t.number})
            if not study.user_attrs.get("seeded"):
                for c in config.techniques:
                    for b in budgets:
                        study.enqueue_trial({"chain": c.label, "budget": b},
                                            user_attrs={"grid": True}, skip_if_exists=True)
                study.set_user_attr("seeded", True)
                study.set_user_attr("config", json.loads(config.model_dump_json()))
        ctx = TechniqueContext(
            spec=spec, data=data, teacher=baseline.model, baseline_profile=baseline.manifest.profile,
            finetune=config.finetune, workdir=workdir / "cache", seed=config.seed,
            job_seed=config.seed,
            progress=progress, should_stop=should_stop)
        cost = default_cost_model() if config.objective == "cost" else None
        return cls(config=config, workdir=workdir, study=study, ctx=ctx, baseline=baseline,
                   budgets=budgets, cost_model=cost, progress=progress, should_stop=should_stop)

    # ---- trials -----------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event)

    def _counts(self) -> tuple[int, int]:
        done = failed = 0
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("harvested_from") is not None:
                continue
            if t.state == TrialState.COMPLETE:
                done += 1
            elif t.state == TrialState.FAIL:
                failed += 1
        return done, failed

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        t0 = time.time()
        label = trial.suggest_categorical("chain", list(self.chains))
        budget = int(trial.suggest_categorical("budget", self.budgets))
        chain: ChainSpec = self.chains[label]
        grid = bool(trial.user_attrs.get("grid"))
        trial.set_user_attr("worker", _worker_id())
        params: dict[str, dict[str, Any]] = {}
        for name in chain.chain:
            cls = TECHNIQUES.get(name)
            sampled = cls.suggest(trial, f"{name}.") if (chain.search and not grid) else {}
            cfg = {**sampled, **chain.params.get(name, {})}
            if (self.config.harvest and len(chain.chain) == 1
                    and "harvest_budgets" in cls.Config.model_fields):
                cfg.setdefault("harvest_budgets", [b for b in self.budgets if b != budget])
            params[name] = cfg
        seed = _stable_seed(self.config.seed, label, budget, params)
        ctx = replace(self.ctx, seed=seed)
        torch.manual_seed(seed)
        self._emit({"type": "trial_start", "trial": trial.number, "chain": chain.chain,
                    "budget": budget})
        try:
            start = baseline_candidate(ctx)
            extras = []
            reducers = [i for i, n in enumerate(chain.chain) if TECHNIQUES.get(n).reduces_count]
            for i, name in enumerate(chain.chain):
                tech = TECHNIQUES.get(name)(**params[name])
                # A reducer followed by another reducer leaves it room to work.
                step_budget = budget if not reducers or i >= reducers[-1] else min(
                    ctx.baseline_profile.relus, int(budget * self.config.chain_slack))
                cands = tech.run(ctx, start, budget=step_budget)
                if not cands:
                    raise PiOptError(f"{name} returned no candidate for budget {budget}")
                start = cands[0]
                if i == len(chain.chain) - 1:
                    extras = cands[1:]
            point = evaluate_candidate(
                start, data=ctx.data, budget=budget,
                directory=self.workdir / "points" / f"trial-{trial.number}",
                workdir=self.workdir, seed=seed, cost_model=self.cost_model)
        except Cancelled:
            raise
        except PiOptError as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc.message}")
            raise _TrialFailed(exc.message) from exc
        point.update(chain=chain.chain, params=params, seconds=time.time() - t0,
                     tuned=chain.search and not grid)
        for k, v in point.items():
            trial.set_user_attr(k, v)
        for j, extra in enumerate(extras):
            self._harvest(trial.number, label, extra, j, seed, tuned=point["tuned"])
        return point["val_accuracy"], self._cost(point)

    def _cost(self, point: dict[str, Any]) -> float:
        if self.config.objective == "cost" and point.get("cost") is not None:
            return float(point["cost"])
        return float(point["relus"])

    def _harvest(self, parent: int, label: str, cand: Any, j: int, seed: int, *,
                 tuned: bool) -> None:
        step = cand.history[-1] if cand.history else {}
        budget = int(step.get("budget") or min(
            (b for b in self.budgets if b >= cand.relus()), default=max(self.budgets)))
        if budget not in self.budgets:
            return
        try:
            point = evaluate_candidate(
                cand, data=self.ctx.data, budget=budget,
                directory=self.workdir / "points" / f"trial-{parent}-h{j}",
                workdir=self.workdir, seed=seed, cost_model=self.cost_model)
        except PiOptError:
            return
        point.update(chain=self.chains[label].chain, params={}, harvested_from=parent,
                     tuned=tuned)
        self.study.add_trial(optuna.trial.create_trial(
            params={"chain": label, "budget": budget},
            distributions={"chain": CategoricalDistribution(list(self.chains)),
                           "budget": CategoricalDistribution(self.budgets)},
            values=[point["val_accuracy"], self._cost(point)],
            user_attrs={**point, "worker": _worker_id()}))

    def _callback(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        done, failed = self._counts()
        event = {"type": "trial", "trial": frozen.number, "state": frozen.state.name.lower(),
                 "done": done, "failed": failed, "total": self.total,
                 "relus": frozen.user_attrs.get("relus"),
                 "val_accuracy": frozen.user_attrs.get("val_accuracy"),
                 "chain": frozen.params.get("chain"), "budget": frozen.params.get("budget"),
                 "best": self.best_so_far()}
        if frozen.state == TrialState.FAIL:
            event["error"] = frozen.user_attrs.get("error")
        self._emit(event)
        if done >= self.total or failed >= max(self.total, 3):
            study.stop()

    def run_trials(self, *, n_trials: int | None = None, timeout_s: float | None = None) -> int:
        """Run trials until the study-wide count of finished (non-harvested) trials reaches
        the job's total, the timeout passes, or ``should_stop`` turns true.

        Returns the number of trials this process ran.
        """
        if n_trials is not None:
            self.total = n_trials
        done, failed = self._counts()
        if done >= self.total or failed >= max(self.total, 3):
            return 0
        self._emit({"type": "phase", "phase": "search", "done": done, "total": self.total})
        before = len(self.study.get_trials(deepcopy=False))
        self.study.optimize(
            self._objective, timeout=timeout_s or self.config.timeout_s,
            callbacks=[self._callback], catch=(_TrialFailed,), gc_after_trial=True)
        return len(self.study.get_trials(deepcopy=False)) - before

    def best_so_far(self) -> dict[str, Any] | None:
        """Front summary of finished trials (validation accuracy vs objective)."""
        trials = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not trials:
            return None
        front = sorted(self.study.best_trials, key=lambda t: t.values[1])
        return {
            "front": [{"trial": t.number, "relus": t.user_attrs.get("relus"),
                       "val_accuracy": t.user_attrs.get("val_accuracy"),
                       "test_accuracy": t.user_attrs.get("test_accuracy"),
                       "chain": t.user_attrs.get("chain")} for t in front],
            "best_val_accuracy": max(t.values[0] for t in trials),
        }

    # ---- report -----------------------------------------------------------------
    def points(self) -> list[ParetoPoint]:
        out = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            out.append(ParetoPoint(
                trial=t.number, chain=a["chain"], params=a.get("params", {}), budget=a["budget"],
                relus=a["relus"], circa_relus=a.get("circa_relus", 0),
                poly_mults=a.get("poly_mults", 0), macs=a["macs"], cost=a.get("cost"),
                val_accuracy=a["val_accuracy"], test_accuracy=a["test_accuracy"],
                per_class_test_accuracy=a.get("per_class_test_accuracy", []),
                sites=a.get("sites", []), artifact=a.get("artifact"),
                harvested_from=a.get("harvested_from"), tuned=a.get("tuned", False),
                seconds=a.get("seconds")))
        return sorted(out, key=lambda p: p.trial)

    def finalize(self, *, measure: Measure | None = None) -> ParetoReport:
        """Build the Pareto report from the study, measure front points, render all formats."""
        from pi_opt.report import answer_budgets, mark_front, render_all

        self._emit({"type": "phase", "phase": "report"})
        points = self.points()
        mark_front(points, self.config.objective)
        failures = [{"trial": t.number, "chain": t.params.get("chain"),
                     "budget": t.params.get("budget"), "error": t.user_attrs.get("error", "")}
                    for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        m = self.baseline.manifest
        baseline = Baseline(
            arch=m.spec.arch.model_dump(mode="json"), relus=m.profile.relus, macs=m.profile.macs,
            val_accuracy=m.metrics["val_accuracy"], test_accuracy=m.metrics["test_accuracy"],
            per_class_test_accuracy=m.metrics["per_class_test_accuracy"], artifact="baseline")
        if measure is not None and self.config.measure_mpc != "none":
            self._emit({"type": "phase", "phase": "measure"})
            targets = [p for p in points if p.pareto or self.config.measure_mpc == "all"]
            baseline.mpc = self._measure(measure, self.workdir / "baseline")
            for i, p in enumerate(targets):
                if self.should_stop is not None and self.should_stop():
                    raise Cancelled("cancelled while measuring")
                self._emit({"type": "measure", "trial": p.trial, "index": i + 1,
                            "of": len(targets)})
                p.mpc = self._measure(measure, self.workdir / str(p.artifact))
        data = self.ctx.data
        report = ParetoReport(
            title=self.config.title, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            dataset={"name": data.name, "num_classes": data.num_classes,
                     "class_names": data.class_names, "sizes": data.sizes(),
                     "input_shape": list(data.input_shape)},
            objective=self.config.objective, counting=COUNTING, budgets=self.budgets,
            techniques=[c.chain for c in self.config.techniques],
            search={"sampler": self.config.sampler, "n_trials": self.total,
                    "seed": self.config.seed, "trials_recorded": len(points),
                    "wall_time_s": round(time.time() - self.started, 1),
                    "baseline_epochs": self.config.baseline.epochs,
                    "finetune_epochs": self.config.finetune.epochs},
            software=_software(), baseline=baseline, points=points,
            answers=answer_budgets(points, self.budgets), failures=failures)
        render_all(report, self.workdir / "report")
        self._emit({"type": "phase", "phase": "done"})
        return report

    def _measure(self, measure: Measure, artifact: Path) -> MpcMeasurement | None:
        try:  # plaintext agreement on real test images, not random inputs
            res = measure(artifact, inputs=self.ctx.data.test.tensors[0])
        except PiOptError as exc:
            self._emit({"type": "log", "level": "warning",
                        "message": f"MPC measurement of {artifact.name} failed: {exc.message}"})
            return None
        return res if isinstance(res, MpcMeasurement) else MpcMeasurement(**res)


def run_search(
    config: SearchConfig,
    *,
    workdir: Path | str,
    storage: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    measure: Measure | None = None,
) -> ParetoReport:
    """Open the session, run all trials, and write the report (``<workdir>/report``)."""
    session = SearchSession.open(config, workdir=workdir, storage=storage, progress=progress,
                                 should_stop=should_stop)
    session.run_trials()
    return session.finalize(measure=measure)


