"""The body of one party process of a measurement or demo (shared by both).

:func:`party_main` runs inside a CrypTen party (see :mod:`mpc.launcher`): for each
model it encrypts the weights, runs the agreement inputs, then times the repeats.
:class:`Job` / :class:`ModelJob` are what the parent sends each party.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mpc._compat import crypten_version, decode
from mpc.errors import MpcUnavailable
from mpc.launcher import CLIENT
from mpc.lowering import Plan, execute

#: Agreement inputs are run through the encrypted model in chunks of this many samples.
AGREEMENT_CHUNK = 64

@dataclass
class ModelJob:
    """One model for one party. ``inputs``/``timed`` exist on the client only."""

    plan_bytes: bytes           # pickled Plan, produced by our own parent process
    n_inputs: int               # number of agreement inputs (public)
    inputs: Tensor | None       # [N, *input_shape] agreement inputs (client)
    timed: Tensor | None        # [batch, *input_shape] timed input (client)


@dataclass
class Job:
    """Work of one party process: its :class:`ModelJob` s and the run settings.

        ``weights``: ``private`` or ``public``; ``device``: resolved torch device name;
        ``repeats`` timed inferences after ``warmup`` untimed ones, each of ``batch_size`` images.
    """
    models: list[ModelJob]
    weights: str
    device: str
    repeats: int
    warmup: int
    batch_size: int


def _infer(plan: Plan, ops: Any, x: Tensor | None, batch: int, rank: int,
           device: torch.device, hook: Any = None) -> Tensor | None:
    """One encrypted inference; returns exact float64 logits on the client, None on the server."""
    import crypten

    data = x if rank == CLIENT and x is not None else torch.zeros(batch, *plan.input_shape)
    enc = crypten.cryptensor(data.to(device), src=CLIENT)
    out = execute(plan, enc, ops, hook=hook)
    revealed = out.reveal(dst=CLIENT)
    if rank != CLIENT:
        return None
    raw = revealed if torch.is_tensor(revealed) else revealed.tensor()
    return decode(raw.cpu())


def party_main(rank: int, job: Job) -> list[dict[str, Any]]:
    """Party body: for each model, encrypt weights, check agreement, time repeats."""
    import crypten
    import crypten.communicator as comm

    from mpc.encrypted import EncryptedOps, OpMeter

    device = torch.device(job.device if job.device == "cpu" else "cuda:0")
    c = comm.get()
    results = []
    with crypten.no_grad():
        for mj in job.models:
            plan: Plan = pickle.loads(mj.plan_bytes)  # bytes from our own parent process
            ops = EncryptedOps(plan, weights=job.weights, device=device)  # type: ignore[arg-type]
            ops.prepare()
            logits: list[Tensor] = []
            n = mj.n_inputs
            for start in range(0, n, AGREEMENT_CHUNK):
                size = min(AGREEMENT_CHUNK, n - start)
                chunk = mj.inputs[start:start + size] if mj.inputs is not None else None
                y = _infer(plan, ops, chunk, size, rank, device)
                if y is not None:
                    logits.append(y)
            meter = OpMeter()
            lat: list[float] = []
            rounds: list[int] = []
            nbytes: list[int] = []
            cpu: list[float] = []
            timed_logits = None
            for r in range(job.warmup + job.repeats):
                c.barrier()
                c.reset_communication_stats()
                meter.recording = r >= job.warmup
                t0, c0 = time.perf_counter(), time.process_time()
                timed_logits = _infer(plan, ops, mj.timed, job.batch_size, rank, device, meter)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                st = c.get_communication_stats()
                if r >= job.warmup:
                    lat.append(dt)
                    cpu.append(dc)
                    rounds.append(int(st["rounds"]))
                    nbytes.append(int(st["bytes"]))
            results.append({
                "latencies": lat, "cpu_s": cpu, "rounds": rounds, "crypten_bytes": nbytes,
                "ops": {i: (s.seconds, s.rounds, s.crypten_bytes) for i, s in meter.stats.items()},
                "logits": torch.cat(logits) if logits else None,
                "timed_logits": timed_logits,
            })
    return results


def resolve_device(requested: str) -> str:
    """``cuda`` when requested and available, else ``cpu``."""
    return "cuda" if requested == "cuda" and torch.cuda.is_available() else "cpu"


def backend_name() -> str:
    """``crypten-<version>``; raises :class:`MpcUnavailable` without crypten."""
    v = crypten_version()
    if v is None:
        raise MpcUnavailable("crypten is not installed (pip install 'pi-opt[mpc]')")
    return f"crypten-{v}"



__all__ = ["AGREEMENT_CHUNK", "Job", "ModelJob", "backend_name", "party_main", "resolve_device"]
