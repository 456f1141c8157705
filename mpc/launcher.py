"""Start CrypTen parties as fresh processes and collect their (small) results.

Our own launcher instead of ``crypten.mpc.run_multiprocess``, which forks, joins
before draining its result queue (deadlocks on large results) and waits forever
when a party dies. Here:

* processes come from the ``spawn`` context, so CrypTen's global state (communicator,
  PRNGs, config) only ever exists inside the party processes;
* CrypTen's communicator is patched by :func:`mpc.exchange.install` (batched openings
  as one message, shared rounds, and - with ``link`` - an emulated network link);
* rendezvous is a gloo ``FileStore`` in a private temporary directory, removed at the end;
* every party sends one message over its own pipe: ``("ok", result)`` or
  ``("error", type, message, traceback)``, pickled with the plain pickler (tensors
  are copied, no shared-memory handles); the parent reads pipes while waiting, so
  large results cannot deadlock (keep them small anyway);
* a party that raises or dies makes the parent kill the others and raise
  :class:`PartyFailed`; past ``timeout_s`` every party is killed and
  :class:`PartyTimeout` is raised. A party also exits if its parent disappears.

``target(rank, payload)`` must be a module-level function (spawn pickles it by
reference); it runs after ``crypten.init()`` in parties ``0..world_size-1``.
With ``provider="TTP"`` an extra process (rank ``world_size``) runs CrypTen's dealer.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from mpc.errors import PartyFailed, PartyTimeout

#: Party that encrypts the input and is the only one to see the output.
CLIENT = 0
#: Party that holds the model.
SERVER = 1

PartyTarget = Callable[[int, Any], Any]


@dataclass(frozen=True)
class PartySetup:
    """Everything a party process needs before running its target."""

    rank: int
    world_size: int
    rendezvous: str
    provider: str
    device: str
    threads: int
    parent_pid: int
    link: tuple[float, float | None] | None = None  # emulated (rtt_ms, bandwidth_mbps)


def _watch_parent(parent_pid: int) -> None:
    """Exit this process when the launching process goes away (no orphans blocked in gloo)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


def _party_main(setup: PartySetup, target: PartyTarget | None, payload: Any,
                conn: Connection) -> None:
    """Entry point of one party process (module level: spawn imports it)."""
    threading.Thread(target=_watch_parent, args=(setup.parent_pid,), daemon=True).start()
    try:
        os.environ.update({
            "WORLD_SIZE": str(setup.world_size),
            "RANK": str(setup.rank),
            "RENDEZVOUS": setup.rendezvous,
            "DISTRIBUTED_BACKEND": "gloo",
        })
        import torch

        torch.set_num_threads(setup.threads)
        from mpc import exchange
        from mpc._compat import import_crypten

        crypten = import_crypten()
        exchange.install()
        if setup.link is not None:
            exchange.set_link(*setup.link)
        from crypten.config import cfg

        cfg.mpc.provider = setup.provider
        cfg.communicator.verbose = True
        device = None
        if setup.device == "cuda":
            device = torch.device("cuda", 0)
            torch.backends.cudnn.deterministic = True
        crypten.init(device=device)
        try:
            if setup.rank >= setup.world_size:  # the TTP dealer
                crypten.mpc.provider.TTPServer()
                result = None
            else:
                assert target is not None
                result = target(setup.rank, payload)
        finally:
            crypten.uninit()
        conn.send_bytes(pickle.dumps(("ok", result)))
    except BaseException as exc:  # report everything, then exit non-zero
        try:
            conn.send_bytes(pickle.dumps(
                ("error", type(exc).__name__, str(exc), traceback.format_exc())))
        finally:
            conn.close()
            os._exit(1)
    conn.close()


_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def _failure(first: tuple[int, str, str, str], conns: dict[Connection, int],
             procs: Sequence[mp.process.BaseProcess], grace_s: float = 2.0) -> PartyFailed:
    """Wait briefly for the other parties' errors; blame the root cause, not the peers
    that merely lost their connection to it."""
    failures = [first]
    deadline = time.monotonic() + grace_s
    for conn, rank in list(conns.items()):
        if conn.poll(max(0.0, deadline - time.monotonic())):
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):  # died without a word: a root cause
                procs[rank].join(timeout=1.0)
                failures.append((rank, "ProcessDied",
                                 f"exited with code {procs[rank].exitcode}", ""))
                continue
            if msg[0] == "error":
                failures.append((rank, msg[1], msg[2], msg[3]))
    failures.sort(key=lambda f: any(p in f[2] for p in _PEER_LOST))
    rank, etype, emsg, tb = failures[0]
    others = "; ".join(f"party {r}: {t}: {m[:200]}" for r, t, m, _ in failures[1:])
    return PartyFailed(f"MPC party {rank} failed: {etype}: {emsg}"
                       + (f" (also {others})" if others else ""), rank=rank, traceback=tb)


def _kill(procs: Sequence[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=5.0)


def _collect(conns: dict[Connection, int], procs: Sequence[mp.process.BaseProcess],
             timeout_s: float) -> dict[int, Any]:
    """Read every party's message while watching for deaths and the deadline."""
    n_procs = len(procs)
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < n_procs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = sorted(set(range(n_procs)) - set(results))
            raise PartyTimeout(
                f"MPC parties {missing} did not finish within {timeout_s:.0f} s; "
                "all parties were stopped", timeout_s=timeout_s)
        waitables: list[Any] = list(conns) + [
            p.sentinel for r, p in enumerate(procs) if r not in results]
        for ready in wait(waitables, timeout=min(remaining, 1.0)):
            if isinstance(ready, Connection):
                rank = conns[ready]
                try:  # our own child's bytes; plain pickle copies tensors (no shm fds)
                    msg = pickle.loads(ready.recv_bytes())
                except (EOFError, OSError):
                    msg = None
                del conns[ready]
                ready.close()
                if msg is None:
                    procs[rank].join(timeout=2.0)
                    raise PartyFailed(
                        f"MPC party {rank} exited without a result "
                        f"(exit code {procs[rank].exitcode})", rank=rank)
                if msg[0] != "ok":
                    raise _failure((rank, msg[1], msg[2], msg[3]), conns, procs)
                results[rank] = msg[1]
            else:  # a process ended: fine only if its message already arrived
                rank = next(r for r, p in enumerate(procs) if p.sentinel == ready)
                conn = next((c for c, r in conns.items() if r == rank), None)
                if rank not in results and (conn is None or not conn.poll(0.5)):
                    raise PartyFailed(
                        f"MPC party {rank} died (exit code {procs[rank].exitcode})",
                        rank=rank)
    return results


def run_parties(
    target: PartyTarget,
    payloads: Sequence[Any],
    *,
    provider: str = "TFP",
    device: str = "cpu",
    threads: int = 1,
    timeout_s: float = 600.0,
    link: tuple[float, float | None] | None = None,
) -> list[Any]:
    """Run ``target(rank, payloads[rank])`` in ``len(payloads)`` CrypTen parties.

    ``link``: ``(rtt_ms, bandwidth_mbps or None)`` to emulate between the parties.

    Returns the per-rank results (index = rank). Raises :class:`PartyFailed` if any
    party raises or exits without a result, :class:`PartyTimeout` after ``timeout_s``.
    """
    world_size = len(payloads)
    if world_size < 2:
        raise ValueError("need at least 2 parties")
    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="pi-opt-mpc-")
    rendezvous = "file://" + os.path.join(tmp, "rendezvous")
    n_procs = world_size + (1 if provider == "TTP" else 0)
    procs: list[mp.process.BaseProcess] = []
    conns: dict[Connection, int] = {}
    try:
        for rank in range(n_procs):
            recv_end, send_end = ctx.Pipe(duplex=False)
            setup = PartySetup(rank, world_size, rendezvous, provider, device, threads,
                               os.getpid(), link)
            payload = payloads[rank] if rank < world_size else None
            proc = ctx.Process(
                target=_party_main,
                args=(setup, target if rank < world_size else None, payload, send_end),
                name=f"pi-opt-mpc-party{rank}", daemon=True,
            )
            proc.start()
            send_end.close()
            procs.append(proc)
            conns[recv_end] = rank
        results = _collect(conns, procs, timeout_s)
        for p in procs:
            p.join(timeout=10.0)
        return [results[r] for r in range(world_size)]
    finally:
        _kill(procs)
        for c in conns:
            c.close()
        shutil.rmtree(tmp, ignore_errors=True)
