"""Console progress of a search: a tqdm bar over trials, status lines that keep the bar intact.

Consumes the events of :class:`pi_opt.search.SearchSession` and of the training loops:

* ``phase`` (data, baseline, search, report, measure, done); the search phase carries the
  resolved budgets and the baseline's ReLU count when the session knows them;
* ``trial_start`` (trial, chain, budget) and ``trial`` (finished: state, done, total, best);
* epoch events ``{"phase", "epoch", "epochs", "val_accuracy"}``;
* ``measure`` (index, of) and ``log`` (level, message).

Lines go through ``tqdm.write`` so they never break the bar. The ETA is
``remaining trials x median trial time``: a first trial that also pays one-off
pre-passes (criticality, caches) does not inflate it.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import IO, Any

from pi_opt.formatting import fmt_duration, fmt_int, fmt_pct


class ProgressDisplay:
    """Callable event sink for ``progress=`` arguments; ``close()`` when the run ends."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.baseline_relus: int | None = None
        self.running: dict[int, float] = {}  # trial -> monotonic start
        self.durations: list[float] = []
        self.current = ""

    # ---- output -----------------------------------------------------------------
    def line(self, text: str) -> None:
        """Print one status line above the bar (or plainly when there is no bar)."""
        if self.quiet:
            return
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def budget_text(self, budget: int | None) -> str:
        """``"4,915 ReLUs (1.0% of baseline)"``; without a baseline count only the count."""
        if budget is None:
            return "?"
        if self.baseline_relus:
            share = fmt_pct(budget / self.baseline_relus, 1)
            return f"{fmt_int(budget)} ReLUs ({share} of baseline)"
        return f"{fmt_int(budget)} ReLUs"

    def eta_s(self) -> float | None:
        """Remaining trials x median finished-trial time (None before the first finishes)."""
        if self.bar is None or not self.durations or self.bar.total is None:
            return None
        return max(0, self.bar.total - self.bar.n) * statistics.median(self.durations)

    # ---- events -----------------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        kind = event.get("type")
        handler = {"phase": self._phase, "trial_start": self._trial_start, "trial": self._trial,
                   "measure": self._measure, "log": self._log}.get(str(kind))
        if handler is not None:
            handler(event)
        elif "epoch" in event and kind in (None, "epoch"):
            self._epoch(event)

    def _phase(self, e: dict[str, Any]) -> None:
        phase = e.get("phase")
        if e.get("baseline_relus"):
            self.baseline_relus = int(e["baseline_relus"])
        if phase == "search":
            if e.get("budgets"):
                self.line("[pi-opt] budgets: " + "; ".join(
                    self.budget_text(int(b)) for b in e["budgets"]))
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=e.get("total"), initial=e.get("done", 0), unit="trial",
                                desc="search", file=self.stream, dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                           "[{elapsed}{postfix}]")
        else:
            self.line(f"[pi-opt] {phase}")

    def _trial_start(self, e: dict[str, Any]) -> None:
        self.running[int(e["trial"])] = time.monotonic()
        chain = "+".join(e.get("chain") or [])
        self.current = f"trial {e['trial']}: {chain} @ {self.budget_text(e.get('budget'))}"
        self._status(self.current)

    def _trial(self, e: dict[str, Any]) -> None:
        started = self.running.pop(int(e["trial"]), None)
        if started is not None and e.get("state") == "complete":
            self.durations.append(time.monotonic() - started)
        if self.bar is not None:
            self.bar.n = e.get("done", self.bar.n)
            if e.get("total"):
                self.bar.total = e["total"]
        chain = e.get("chain") or "?"
        result = (f"{fmt_int(e.get('relus'))} ReLUs, val {fmt_pct(e.get('val_accuracy'))}"
                  if e.get("state") == "complete" else
                  f"{e.get('state')}: {e.get('error') or e.get('skipped') or ''}")
        self.line(f"  trial {e['trial']} {chain} @ {fmt_int(e.get('budget'))}: {result}")
        eta = self.eta_s()
        best = (e.get("best") or {}).get("best_val_accuracy")
        self._status(f"best val {fmt_pct(best)}" + (f", ETA {fmt_duration(eta)}" if eta else ""))

    def _epoch(self, e: dict[str, Any]) -> None:
        epoch, epochs = int(e.get("epoch") or 0), e.get("epochs")
        msg = (f"{e.get('phase') or 'train'} epoch {epoch}/{epochs} "
               f"val {fmt_pct(e.get('val_accuracy'))}")
        if self.bar is not None:
            self._status(f"{self.current} | {msg}" if self.current else msg)
        else:
            self.line(f"  {msg}")

    def _measure(self, e: dict[str, Any]) -> None:
        self.line(f"[pi-opt] MPC measurement {e.get('index')}/{e.get('of')}"
                  + (f" (trial {e['trial']})" if e.get("trial") is not None else ""))

    def _log(self, e: dict[str, Any]) -> None:
        self.line(f"[pi-opt] {e.get('level', 'info')}: {e.get('message', '')}")

    def close(self) -> None:
        """Close the bar (idempotent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["ProgressDisplay"]
