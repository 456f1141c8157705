"""Early stopping on a validation plateau (``TrainConfig.patience`` / ``min_delta``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Plateau:
    """Stop a training after ``patience`` epochs in a row without an improvement of more than
    ``min_delta`` (accuracy fraction) over the best validation accuracy so far.

    ``patience=None`` never stops. The state is the plain dict ``record`` (``best``,
    ``since``), so a checkpointed training carries it (restored in place) or rebuilds it by
    replaying its epochs' accuracies (:meth:`replay`).
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.record: dict[str, Any] = {"best": -math.inf, "since": 0}

    def update(self, val_accuracy: float) -> bool:
        """Record one epoch's validation accuracy; True when the training should stop now.
        A NaN accuracy (no validation split) never improves and never stops."""
        if self.patience is None or val_accuracy != val_accuracy:
            return False
        r = self.record
        if val_accuracy > r["best"] + self.min_delta:
            r["best"], r["since"] = float(val_accuracy), 0
        else:
            r["since"] += 1
        return bool(r["since"] >= self.patience)

    def replay(self, accuracies: Iterable[float]) -> None:
        """Feed the accuracies of epochs already trained (a resumed run), in order."""
        for a in accuracies:
            self.update(a)
