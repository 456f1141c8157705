"""How the two parties exchange shares: batched openings, shared rounds, emulated links.

Installed into CrypTen's ``DistributedCommunicator`` inside each party process
(:func:`install`); nothing here runs in the parent. Three things:

* **One exchange path.** Every opening of int64 shares (CrypTen's ``all_reduce``, batched
  or not, and the ``reduce`` that reveals the output) is one ``all_gather`` of one flat
  message followed by a local combine: same rounds and bytes, fewer calls, and the
  same code on loopback and on an emulated link, so a time fitted on loopback
  holds on the emulated links (gloo's ``all_reduce`` of 2 ranks took longer per round
  than this swap, which made emulated-LAN runs faster than loopback ones).
* **Shared rounds** (:func:`run_shared`). Independent sub-protocols (a site's exact
  ReLU, squares and Circa sign test) run as cooperative tasks: each runs until its
  next opening, then the pending openings of all tasks go out as *one* message, so
  the site takes the rounds of its longest sub-protocol, not the sum. Tasks run one
  at a time in a fixed order, so both parties draw CrypTen's shared randomness
  (PRZS seeds, TFP triples) in the same order.
* **Emulated link** (:func:`set_link`). Every exchange is paced at the link's
  bandwidth (a per-party send queue) and delivered one RTT after it leaves: the
  message carries its arrival time (an extra int64 that CrypTen's counters do not
  see) and the receiver sleeps until then. So measured latency includes the network
  and its overlap with compute. Arrival times use ``time.monotonic`` (one clock:
  both parties run on the same host). Covered: ``all_reduce`` (every opening) and
  ``reduce`` (the reveal to the client); other collectives (TTP dealer traffic) are
  not delayed.

Round and byte counts stay CrypTen's: one fused exchange of ``N`` int64 values is
logged as one ``all_reduce`` of ``N`` values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# ---------------------------------------------------------------- emulated link


@dataclass
class Link:
    """One party's outgoing link: ``rtt_s`` per exchange, ``bytes_per_s`` (None: unlimited)."""

    rtt_s: float
    bytes_per_s: float | None
    free_at: float = 0.0  # monotonic time at which the send queue is empty

    def departure_done(self, nbytes: int) -> float:
        """Queue ``nbytes`` now; monotonic time at which the last byte has left."""
        start = max(time.monotonic(), self.free_at)
        self.free_at = start + (nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)
        return self.free_at


_LINK: Link | None = None


def set_link(rtt_ms: float | None, bandwidth_mbps: float | None) -> None:
    """Emulate a link in this party (``rtt_ms=None``: none, the real loopback)."""
    global _LINK
    _LINK = None if rtt_ms is None else Link(
        rtt_s=rtt_ms * 1e-3, bytes_per_s=None if bandwidth_mbps is None
        else bandwidth_mbps * 1e6 / 8.0)


def _swap(flat: Tensor, group: Any, *, receive: bool = True) -> Tensor:
    """Send ``flat`` (int64, 1-d) to the peer and return the peer's ``flat``.

    On an emulated link the peer's message is released at its arrival time
    (``receive=False``: this party does not wait for it - a one-way send).
    """
    rank = dist.get_rank(group)
    if _LINK is None:
        parts = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(parts, flat, group=group)
        return parts[1 - rank]
    arrival = _LINK.departure_done(8 * flat.numel()) + _LINK.rtt_s
    stamped = torch.cat([flat, torch.tensor([int(arrival * 1e9)], dtype=torch.int64,
                                            device=flat.device)])
    parts = [torch.empty_like(stamped) for _ in range(2)]
    dist.all_gather(parts, stamped, group=group)
    peer = parts[1 - rank]
    wait = int(peer[-1]) * 1e-9 - time.monotonic()
    if receive and wait > 0:
        time.sleep(wait)
    return peer[:-1]


def _combine(mine: Tensor, peer: Tensor, op: Any) -> Tensor:
    if op == dist.ReduceOp.BXOR:
        return mine ^ peer
    if op == dist.ReduceOp.SUM:
        return mine + peer
    raise ValueError(f"unsupported reduce op {op}")


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view(t.shape))
        start += t.numel()
    return out


def exchange(tensors: Sequence[Tensor], ops: Sequence[Any], group: Any, *,
             receive: bool = True) -> list[Tensor]:
    """All-reduce ``tensors[i]`` with ``ops[i]`` between the 2 parties of ``group`` (the
    communicator's main group: a TTP dealer is not in it) in one message.
    ``receive=False``: the result is not needed here, do not wait for the link."""
    peer = _split(_swap(_flat(tensors), group, receive=receive), tensors)
    return [_combine(m, p, op) for m, p, op in zip(tensors, peer, ops, strict=True)]


# ---------------------------------------------------------------- shared rounds


class _Task:
    """One sub-protocol of :func:`run_shared`, run in its own thread, one at a time."""

    def __init__(self, fn: Callable[[], Any], yielded: threading.Semaphore) -> None:
        self.fn = fn
        self.go = threading.Semaphore(0)
        self.yielded = yielded
        self.request: tuple[list[Tensor], Any] | None = None
        self.reply: list[Tensor] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self.go.acquire()
        _CURRENT.task = self
        try:
            self.result = self.fn()
        except BaseException as exc:  # re-raised by run_shared in the caller's thread
            self.error = exc
        finally:
            self.done = True
            self.yielded.release()

    def open(self, tensors: list[Tensor], op: Any) -> list[Tensor]:
        """Called in the task: post an opening, wait for the fused exchange."""
        self.request = (tensors, op)
        self.yielded.release()
        self.go.acquire()
        reply, self.reply = self.reply, None
        assert reply is not None
        return reply


_CURRENT = threading.local()


def current_task() -> _Task | None:
    """The shared-round task running in this thread, or None outside :func:`run_shared`."""
    return getattr(_CURRENT, "task", None)


def _fused_round(pending: list[_Task], group: Any, log: Callable[[int], None]) -> None:
    """One exchange carrying every pending task's opening; one logged round."""
    tensors: list[Tensor] = []
    ops: list[Any] = []
    for t in pending:
        assert t.request is not None
        tensors += t.request[0]
        ops += [t.request[1]] * len(t.request[0])
    log(sum(2 * x.numel() for x in tensors))
    replies = exchange(tensors, ops, group)
    for t in pending:
        n = len(t.request[0])  # type: ignore[index]
        t.reply, replies = replies[:n], replies[n:]
        t.request = None


def run_shared(fns: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent sub-protocols with their openings fused round by round.

    Deterministic on both parties (tasks advance one at a time, in order). Returns the
    results in order; re-raises the first task error.
    """
    if len(fns) <= 1:
        return [f() for f in fns]
    import crypten.communicator as comm

    c = comm.get()
    yielded = threading.Semaphore(0)
    tasks = [_Task(f, yielded) for f in fns]
    for t in tasks:
        t.thread.start()
    while not all(t.done for t in tasks):
        for t in tasks:
            if not t.done and t.request is None:
                t.go.release()
                yielded.acquire()
        pending = [t for t in tasks if t.request is not None]
        if pending:
            _fused_round(pending, c.main_group,
                         c._log_communication if _verbose() else lambda n: None)
    for t in tasks:
        t.thread.join()
        if t.error is not None:
            raise t.error
    return [t.result for t in tasks]


def _verbose() -> bool:
    from crypten.config import cfg

    return bool(cfg.communicator.verbose)


# ---------------------------------------------------------------- installation


def _plain(tensors: Sequence[Any]) -> bool:
    return all(torch.is_tensor(t) and t.dtype == torch.int64 for t in tensors)


def install() -> None:
    """Patch CrypTen's communicator in this party process (idempotent)."""
    from crypten.communicator.communicator import _logging
    from crypten.communicator.distributed_communicator import DistributedCommunicator

    if getattr(DistributedCommunicator, "_pi_opt_exchange", False):
        return
    logged_all_reduce = DistributedCommunicator.all_reduce
    original = logged_all_reduce.__wrapped__
    original_reduce = DistributedCommunicator.reduce.__wrapped__

    def inner_all_reduce(self, input, op=dist.ReduceOp.SUM, batched=False):  # noqa: A002
        tensors = list(input) if batched else [input]
        if not _plain(tensors):
            return original(self, input, op=op, batched=batched)
        out = exchange(tensors, [op] * len(tensors), self.main_group)
        return out if batched else out[0]

    inner_all_reduce.__name__ = "all_reduce"  # CrypTen's logger counts by function name
    logged = _logging(inner_all_reduce)

    def all_reduce(self, input, op=dist.ReduceOp.SUM, batched=False):  # noqa: A002
        task = current_task()
        tensors = list(input) if batched else [input]
        if task is None or not _plain(tensors):
            return logged(self, input, op=op, batched=batched)
        out = task.open(tensors, op)  # logged once per fused round
        return out if batched else out[0]

    def reduce(self, input, dst, op=dist.ReduceOp.SUM, batched=False):  # noqa: A002
        tensors = list(input) if batched else [input]
        if not _plain(tensors):
            return original_reduce(self, input, dst, op=op, batched=batched)
        mine = self.get_rank() == dst
        out = exchange(tensors, [op] * len(tensors), self.main_group, receive=mine)
        if not mine:  # the sender's copy is not the result (as with gloo's reduce)
            out = [t.clone() for t in tensors]
        return out if batched else out[0]

    DistributedCommunicator.all_reduce = all_reduce
    DistributedCommunicator.reduce = _logging(reduce)
    DistributedCommunicator._pi_opt_exchange = True


__all__ = ["Link", "current_task", "exchange", "install", "run_shared", "set_link"]
