"""Optuna multi-objective search over technique chains, hyperparameters and budgets.

Objectives: validation accuracy (maximize) and the ReLU count or the cost-model
latency (minimize). The grid (``_study.seed_grid``) runs every chain once per budget
with default hyperparameters, so a combined search always contains what each
single technique would produce on its own; a technique that ``harvests`` (an SNL
descent) runs once for all budgets and each snapshot becomes a trial of its own.
The sampler then explores hyperparameters. Fine-tune epochs report validation
accuracy; ``pruning`` stops trials that fall behind their budget bucket
(``_pruning``); ``max_class_drop`` is a study constraint. Every trial records its
compute per phase (``_compute``).

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

from pi_opt.artifacts import ModelSpec
from pi_opt.costmodel import LatencyModel, default_cost_model, relu_budget_for_latency
from pi_opt.data import load_dataset
from pi_opt.errors import Cancelled, PiOptError
from pi_opt.profile import profile_model
from pi_opt.report.schema import Baseline, MpcMeasurement, ParetoPoint, ParetoReport
from pi_opt.search._baseline import file_lock, obtain_baseline, resolve_spec
from pi_opt.search._compute import ComputeMeter, job_compute
from pi_opt.search._config import ChainSpec, SearchConfig
from pi_opt.search._evaluate import evaluate_candidate, worst_class_drop
from pi_opt.search._pruning import (
    CURVES, NO_VOTE, SKIPPED, bucket_key, peer_curves, should_prune, skip_reason,
)
from pi_opt.search._study import (
    CHECKPOINT_OF, STUDY_NAME, harvesting, make_sampler, make_storage, planned_epochs,
    recover_stale, seed_grid,
)
from pi_opt.techniques import TECHNIQUES, baseline_candidate
from pi_opt.techniques.base import Candidate, EarlyStop, LatencyObjective, TechniqueContext
from pi_opt.training import TrainingCheckpoints, evaluate
from pi_opt.training._loops import ProgressFn, StopFn

COUNTING = (
    "ReLUs are per-sample scalar comparisons: exact ReLU + Circa (truncated-sign) ReLU "
    "elements; identity (linearized) elements count 0; polynomial elements count 0 ReLUs and "
    "1 secure multiplication each (poly_mults); max-pool comparisons are reported separately; "
    "stem ReLU included when the architecture has one. Counted on the saved artifact."
)
#: ``measure(artifact_dir, inputs=test_images) -> MpcMeasurement`` (e.g. ``mpc.measure.make_measure``).
Measure = Callable[..., MpcMeasurement | dict[str, Any]]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _TrialFailed(Exception):
    """A trial failed for a user-facing reason (recorded in the trial's user attrs)."""


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _stable_seed(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, sort_keys=True, default=str).encode()) & 0x7FFFFFFF


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "optuna": optuna.__version__}
    try:
        out["pi_opt"] = version("pi-opt")
    except PackageNotFoundError:
        out["pi_opt"] = "dev"
    return out


def latency_relu_budgets(config: SearchConfig, spec: ModelSpec) -> list[int]:
    """ReLU budgets that stand for ``config.latency_budgets_ms`` on ``config.network``
    (at least 1 each); ConfigError for a budget below the linear-layer floor."""
    if not config.latency_budgets_ms:
        return []
    prof = profile_model(spec.build(), tuple(spec.input_shape))
    model = default_cost_model()
    return [max(1, relu_budget_for_latency(model, prof, config.network, ms * 1e-3))
            for ms in config.latency_budgets_ms]


class SearchSession:
    """One worker's handle on a job: data, baseline, study and technique context."""

    def __init__(
        self, *, config: SearchConfig, workdir: Path, study: optuna.Study,
        ctx: TechniqueContext, baseline: Any, budgets: list[int],
        cost_model: LatencyModel | None, progress: ProgressFn | None, should_stop: StopFn | None,
        baseline_val_per_class: list[float] | None = None,
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
        self.baseline_val_per_class = baseline_val_per_class or []
        self.pruning = config.effective_pruning()

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
        t0 = time.perf_counter()
        data = load_dataset(config.data)
        data_s = time.perf_counter() - t0
        spec = resolve_spec(config, data)
        latency_relus = latency_relu_budgets(config, spec)  # ConfigError below the floor: early
        emit({"type": "phase", "phase": "baseline"})
        baseline = obtain_baseline(config, spec, data, workdir, progress=progress,
                                   should_stop=should_stop)
        budgets = sorted(set(config.absolute_budgets(baseline.manifest.profile.relus))
                         | set(latency_relus))
        for b in (b for b in budgets if b >= baseline.manifest.profile.relus):
            emit({"type": "log", "level": "warning", "message": (
                f"budget {b:,} ReLUs is at or above the baseline's "
                f"{baseline.manifest.profile.relus:,}: the all-ReLU network already meets it")})
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=make_storage(storage, workdir),
            directions=["maximize", "minimize"], sampler=make_sampler(config),
            load_if_exists=True)
        with file_lock(workdir / ".study.lock"):
            if storage is None:  # single-writer journal: RUNNING trials belong to a dead attempt
                recover_stale(study)
            seed_grid(study, config, budgets)
            study.set_user_attr("data_seconds",
                                float(study.user_attrs.get("data_seconds", 0.0)) + data_s)
        ctx = TechniqueContext(
            spec=spec, data=data, teacher=baseline.model, baseline_profile=baseline.manifest.profile,
            finetune=config.finetune, workdir=workdir / "cache", seed=config.seed,
            job_seed=config.seed, progress=progress, should_stop=should_stop,
            fairness_weight=config.fairness_weight,
            latency=(LatencyObjective(network=config.network, cost_model=default_cost_model())
                     if config.objective == "latency" else None))
        base_val = evaluate(baseline.model, data.val, num_classes=data.num_classes).per_class
        cost = default_cost_model() if config.objective in ("cost", "latency") else None
        return cls(config=config, workdir=workdir, study=study, ctx=ctx, baseline=baseline,
                   budgets=budgets, cost_model=cost, progress=progress, should_stop=should_stop,
                   baseline_val_per_class=base_val)

    # ---- trials -----------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event)

    def _counts(self) -> tuple[int, int]:
        """Finished points (complete or pruned, harvested included) and failed trials."""
        done = failed = 0
        for t in self.study.get_trials(deepcopy=False):
            if t.state in FINISHED:
                done += 1
            elif t.state == TrialState.FAIL:
                failed += 1
        return done, failed

    def _params(self, trial: optuna.Trial, chain: ChainSpec, grid: bool
                ) -> dict[str, dict[str, Any]]:
        params: dict[str, dict[str, Any]] = {}
        for name in chain.chain:
            cls = TECHNIQUES.get(name)
            sampled = cls.suggest(trial, f"{name}.") if (chain.search and not grid) else {}
            params[name] = {**sampled, **chain.params.get(name, {})}
        return params

    def _early_stop(self, trial: optuna.Trial, budget: int, planned: int, meter: ComputeMeter,
                    step: dict[str, Any], harvest: bool) -> EarlyStop:
        """The trial's early-stopping channel: record each report in its bucket curve at the
        trial's progress (``meter.own_epochs / planned``); stop when ``_pruning`` says so.
        Reports of a chain step run above the trial's budget (``chain_slack``) are not its
        bucket's and are left out; a harvesting trial records but never stops."""
        curves: dict[str, list[list[float]]] = {}

        def rule(cand_budget: int | None, phase: str, epoch: int, val_acc: float) -> bool:
            b = step["budget"] if cand_budget is None else int(cand_budget)
            if cand_budget is None and b != budget:
                return False
            key = bucket_key(b)
            progress = round(meter.own_epochs / planned, 4)
            curves.setdefault(key, []).append([progress, round(float(val_acc), 5)])
            trial.set_user_attr(CURVES, curves)
            if harvest or b not in self.budgets:
                return False
            peers = peer_curves(self.study.get_trials(deepcopy=False, states=FINISHED), key)
            stop = should_prune(self.pruning, curves[key], peers,
                                min_peers=self.config.pruning_min_trials,
                                warmup=self.config.pruning_warmup)
            if stop:
                step["stopped_at"] = meter.own_epochs
            return stop
        return EarlyStop(rule)

    def _run_chain(self, ctx: TechniqueContext, chain: ChainSpec,
                   params: dict[str, dict[str, Any]], budget: int,
                   trial: optuna.Trial, meter: ComputeMeter) -> list[Candidate]:
        """Apply the chain; the last technique's candidates (first answers ``budget``).
        A pruned trial's first candidate carries ``notes["pruned_at_epoch"]`` (its training
        epochs when it was asked to stop)."""
        start = baseline_candidate(ctx)
        reducers = [i for i, n in enumerate(chain.chain) if TECHNIQUES.get(n).reduces_count]
        harvest = harvesting(chain, self.config)
        if harvest:
            trial.set_user_attr(NO_VOTE, True)
        step: dict[str, Any] = {"budget": budget, "stopped_at": None}
        early = self._early_stop(trial, budget, planned_epochs(chain.chain, params, self.config),
                                 meter, step, harvest)
        ctx = replace(ctx, early_stop=early)
        cands: list[Candidate] = []
        for i, name in enumerate(chain.chain):
            tech = TECHNIQUES.get(name)(**params[name])
            if harvest:
                tech = tech.with_harvest([b for b in self.budgets if b != budget])
            # A reducer followed by another reducer leaves it room to work.
            step["budget"] = budget if not reducers or i >= reducers[-1] else min(
                ctx.baseline_profile.relus, int(budget * self.config.chain_slack))
            cands = tech.run(ctx, start, budget=step["budget"])
            if not cands:
                raise PiOptError(f"{name} returned no candidate for budget {budget}")
            start = cands[0]
        if early.cut:
            cands[0].notes["pruned_at_epoch"] = step["stopped_at"]
        return cands

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        label = trial.suggest_categorical("chain", list(self.chains))
        budget = int(trial.suggest_categorical("budget", self.budgets))
        chain: ChainSpec = self.chains[label]
        grid = bool(trial.user_attrs.get("grid"))
        trial.set_user_attr("worker", _worker_id())
        params = self._params(trial, chain, grid)
        retry = CHECKPOINT_OF in trial.user_attrs  # a dead trial's re-run: runs what it asked
        reason = self._skip_reason(chain, budget) if grid and not retry else None
        if reason is not None:
            trial.set_user_attr(SKIPPED, reason)
            raise optuna.TrialPruned(f"skipped: {reason}")
        seed = _stable_seed(self.config.seed, label, budget, params)
        meter = ComputeMeter(len(self.ctx.data.train.tensors[1]))
        checkpoints = self._checkpoints(trial)
        ctx = replace(self.ctx, seed=seed, progress=meter.wrap(self.progress),
                      checkpoints=checkpoints)
        torch.manual_seed(seed)
        self._emit({"type": "trial_start", "trial": trial.number, "chain": chain.chain,
                    "budget": budget})
        tuned = chain.search and not grid
        keep = False  # the checkpoints outlive the trial only when its process is going down
        try:
            cands = self._run_chain(ctx, chain, params, budget, trial, meter)
            with meter.timed("evaluation"):
                point = self._evaluate(cands[0], budget, f"trial-{trial.number}", seed)
                extras = [self._evaluate(c, None, f"trial-{trial.number}-h{j}", seed)
                          for j, c in enumerate(cands[1:])]
        except Cancelled:
            raise
        except PiOptError as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc.message}")
            raise _TrialFailed(exc.message) from exc
        except BaseException as exc:
            keep = not isinstance(exc, Exception)  # e.g. SystemExit from a signal handler
            raise
        finally:
            trial.set_user_attr("compute", meter.totals())
            if not keep:
                checkpoints.clear()
        assert point is not None  # a requested budget either yields a point or raises
        point.update(chain=chain.chain, params=params, tuned=tuned,
                     seconds=round(sum(p["seconds"] for p in meter.totals().values()), 3))
        for k, v in point.items():
            trial.set_user_attr(k, v)
        self._record_constraint(trial.set_constraint, point)
        for extra in extras:
            if extra is not None:
                self._add_harvested(trial.number, label, extra, tuned=tuned)
        if point["pruned_at_epoch"] is not None:
            raise optuna.TrialPruned(f"pruned after {point['pruned_at_epoch']} training epochs")
        return point["val_accuracy"], self._cost(point)

    def _skip_reason(self, chain: ChainSpec, budget: int) -> str | None:
        """Why the grid trial of ``chain`` at ``budget`` is not run (``_pruning.skip_reason``;
        only under pruning, never for a harvesting chain), else None."""
        if self.pruning == "none" or harvesting(chain, self.config):
            return None
        finished = self.study.get_trials(deepcopy=False, states=FINISHED)
        mine = [t for t in finished
                if t.user_attrs.get("grid") and t.params.get("chain") == chain.label]
        points = [(p.relus, p.val_accuracy) for p in self.points()
                  if not p.pruned and p.feasible]
        return skip_reason(budget, mine, points, finished)

    def skipped(self) -> list[dict[str, Any]]:
        """Grid trials not run (cross-budget skipping): trial, chain, budget, reason."""
        return [{"trial": t.number, "chain": self.chains[t.params["chain"]].chain,
                 "budget": int(t.params["budget"]), "reason": t.user_attrs[SKIPPED]}
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
                if SKIPPED in t.user_attrs and t.params.get("chain") in self.chains]

    def _checkpoints(self, trial: optuna.Trial) -> TrainingCheckpoints:
        """The trial's training checkpoints: ``<workdir>/checkpoints/trial-<n>``, ``n`` the
        first trial of its retry line (user attr ``checkpoint_of``, inherited by the re-run of
        a dead trial), so a re-run resumes where its worker died. Removed when the trial
        ends in Python (complete, pruned, failed, cancelled); a killed worker leaves them."""
        first = trial.user_attrs.get(CHECKPOINT_OF)
        if first is None:
            first = trial.number
            trial.set_user_attr(CHECKPOINT_OF, first)
        return TrainingCheckpoints(self.workdir / "checkpoints" / f"trial-{int(first)}")

    def _evaluate(self, cand: Candidate, budget: int | None, name: str, seed: int
                  ) -> dict[str, Any] | None:
        """Save, reload, count and test ``cand``; ``budget=None``: a harvested snapshot
        (its own step budget; None when that is no requested budget or it fails)."""
        harvested = budget is None
        if budget is None:
            step = cand.history[-1] if cand.history else {}
            budget = int(step.get("budget") or min(
                (b for b in self.budgets if b >= cand.relus()), default=max(self.budgets)))
            if budget not in self.budgets:
                return None
        try:
            point = evaluate_candidate(
                cand, data=self.ctx.data, budget=budget, directory=self.workdir / "points" / name,
                workdir=self.workdir, seed=seed, cost_model=self.cost_model,
                network=self.config.network if self.config.objective == "latency" else None)
        except PiOptError:
            if harvested:
                return None
            raise
        point["worst_class_drop"] = worst_class_drop(self.baseline_val_per_class,
                                                     point["per_class_val_accuracy"])
        point["pruned_at_epoch"] = cand.notes.get("pruned_at_epoch")
        return point

    def _record_constraint(self, set_constraint: Callable[[str, float], None],
                           point: dict[str, Any]) -> None:
        limit = self.config.max_class_drop
        if limit is not None:
            set_constraint("max_class_drop", float(point["worst_class_drop"]) - limit)

    def _cost(self, point: dict[str, Any]) -> float:
        if self.config.objective in ("cost", "latency") and point.get("cost") is not None:
            return float(point["cost"])
        return float(point["relus"])

    def _add_harvested(self, parent: int, label: str, point: dict[str, Any], *,
                       tuned: bool) -> None:
        """Record a harvested snapshot as a trial of its own (its compute is the parent's;
        no curve: a descent's reports do not vote)."""
        point.update(chain=self.chains[label].chain, params={}, harvested_from=parent,
                     tuned=tuned, worker=_worker_id())
        constraints: dict[str, float] = {}
        self._record_constraint(constraints.__setitem__, point)
        pruned = point["pruned_at_epoch"] is not None
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            params={"chain": label, "budget": point["budget"]},
            distributions={"chain": CategoricalDistribution(list(self.chains)),
                           "budget": CategoricalDistribution(self.budgets)},
            values=None if pruned else [point["val_accuracy"], self._cost(point)],
            user_attrs=point, constraints=constraints or None))

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
        if SKIPPED in frozen.user_attrs:
            event["skipped"] = frozen.user_attrs[SKIPPED]
        self._emit(event)
        if done >= self.total or failed >= max(self.total, 3):
            study.stop()

    def run_trials(self, *, n_trials: int | None = None, timeout_s: float | None = None) -> int:
        """Run trials until the study-wide count of finished points (complete or pruned,
        harvested snapshots included) reaches the job's total, the timeout passes, or
        ``should_stop`` turns true.

        Returns the number of trials this process ran (harvested snapshots included).
        """
        if n_trials is not None:
            self.total = n_trials
        done, failed = self._counts()
        if done >= self.total or failed >= max(self.total, 3):
            return 0
        self._emit({"type": "phase", "phase": "search", "done": done, "total": self.total,
                    "budgets": self.budgets,
                    "baseline_relus": self.baseline.manifest.profile.relus})
        before = len(self.study.get_trials(deepcopy=False))
        self.study.optimize(
            self._objective, timeout=timeout_s or self.config.timeout_s,
            callbacks=[self._callback], catch=(_TrialFailed,), gc_after_trial=True)
        return len(self.study.get_trials(deepcopy=False)) - before

    def best_so_far(self) -> dict[str, Any] | None:
        """Front summary of finished trials (validation accuracy vs objective)."""
        from pi_opt.report import mark_front

        points = self.points()
        if not points:
            return None
        mark_front(points, self.config.objective)
        front = sorted((p for p in points if p.pareto), key=lambda p: p.relus)
        return {
            "front": [{"trial": p.trial, "relus": p.relus, "val_accuracy": p.val_accuracy,
                       "test_accuracy": p.test_accuracy, "chain": p.chain} for p in front],
            "best_val_accuracy": max(p.val_accuracy for p in points),
        }

    # ---- report -----------------------------------------------------------------
    def points(self) -> list[ParetoPoint]:
        """Every evaluated point: complete and pruned trials (pruned ones never on the front)."""
        out = []
        limit = self.config.max_class_drop
        for t in self.study.get_trials(deepcopy=False, states=FINISHED):
            a = t.user_attrs
            if "relus" not in a:
                continue
            drop = a.get("worst_class_drop")
            out.append(ParetoPoint(
                trial=t.number, chain=a["chain"], params=a.get("params", {}), budget=a["budget"],
                relus=a["relus"], circa_relus=a.get("circa_relus", 0),
                poly_mults=a.get("poly_mults", 0), macs=a["macs"], cost=a.get("cost"),
                latency_s=a.get("latency_s"),
                val_accuracy=a["val_accuracy"], test_accuracy=a["test_accuracy"],
                per_class_test_accuracy=a.get("per_class_test_accuracy", []),
                sites=a.get("sites", []), artifact=a.get("artifact"),
                harvested_from=a.get("harvested_from"), tuned=a.get("tuned", False),
                seconds=a.get("seconds"), compute=a.get("compute"),
                pruned=t.state == TrialState.PRUNED, pruned_at_epoch=a.get("pruned_at_epoch"),
                worst_class_drop=drop,
                feasible=limit is None or drop is None or drop <= limit))
        return sorted(out, key=lambda p: (p.trial, p.relus))

    def _failures(self) -> list[dict[str, Any]]:
        stale = set(self.study.user_attrs.get("stale_trials", []))
        return [{"trial": t.number, "chain": t.params.get("chain"),
                 "budget": t.params.get("budget"),
                 "error": t.user_attrs.get("error") or ("worker died (stale trial)"
                                                        if t.number in stale else "")}
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]

    def compute(self, *, mpc_seconds: float = 0.0) -> dict[str, Any]:
        """The job's compute block (survives resume: it is rebuilt from the study)."""
        m = self.baseline.manifest
        epochs = 0 if m.metrics.get("imported_weights") else self.config.baseline.epochs
        n_train = len(self.ctx.data.train.tensors[1])
        trials = [t.user_attrs["compute"] for t in self.study.get_trials(deepcopy=False)
                  if "compute" in t.user_attrs]
        return job_compute(
            data_seconds=float(self.study.user_attrs.get("data_seconds", 0.0)),
            baseline={"epochs": epochs, "images": epochs * n_train,
                      "seconds": round(float(m.metrics.get("train_seconds", 0.0)), 1)},
            trials=trials, mpc_seconds=mpc_seconds)

    def finalize(self, *, measure: Measure | None = None) -> ParetoReport:
        """Build the Pareto report from the study, measure front points, render all formats."""
        from pi_opt.report import answer_budgets, answer_latency_budgets, mark_front, render_all

        self._emit({"type": "phase", "phase": "report"})
        points = self.points()
        mark_front(points, self.config.objective)
        m = self.baseline.manifest
        baseline = Baseline(
            arch=m.spec.arch.model_dump(mode="json"), relus=m.profile.relus, macs=m.profile.macs,
            val_accuracy=m.metrics["val_accuracy"], test_accuracy=m.metrics["test_accuracy"],
            per_class_test_accuracy=m.metrics["per_class_test_accuracy"], artifact="baseline")
        t0 = time.perf_counter()
        if measure is not None and self.config.measure_mpc != "none":
            self._measure_all(measure, baseline, points)
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
                    "pruning": self.pruning, "max_class_drop": self.config.max_class_drop,
                    "fairness_weight": self.config.fairness_weight,
                    "baseline_epochs": self.config.baseline.epochs,
                    "finetune_epochs": self.config.finetune.epochs,
                    "finetune_patience": self.config.finetune.patience},
            software=_software(), baseline=baseline, points=points,
            answers=answer_budgets(points, self.budgets), failures=self._failures(),
            skipped=self.skipped(),
            network=self.config.network.model_dump(mode="json"),
            latency_answers=answer_latency_budgets(points, self.config.latency_budgets_ms),
            compute=self.compute(mpc_seconds=time.perf_counter() - t0))
        render_all(report, self.workdir / "report")
        self._emit({"type": "phase", "phase": "done"})
        return report

    def _measure_all(self, measure: Measure, baseline: Baseline,
                     points: list[ParetoPoint]) -> None:
        self._emit({"type": "phase", "phase": "measure"})
        targets = [p for p in points if p.pareto or self.config.measure_mpc == "all"]
        baseline.mpc = self._measure(measure, self.workdir / "baseline")
        for i, p in enumerate(targets):
            if self.should_stop is not None and self.should_stop():
                raise Cancelled("cancelled while measuring")
            self._emit({"type": "measure", "trial": p.trial, "index": i + 1, "of": len(targets)})
            t0 = time.perf_counter()
            p.mpc = self._measure(measure, self.workdir / str(p.artifact))
            p.compute = {**(p.compute or {}), "mpc": {
                "epochs": 0, "images": 0, "seconds": round(time.perf_counter() - t0, 3)}}

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
