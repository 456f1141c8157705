"""Execute a :class:`~mpc.lowering.Plan` on CrypTen shares, op by op, with cost accounting.

Runs only inside a party process (crypten imported lazily). Per op:

* ``conv`` / ``linear`` / ``affine``: Beaver products with the server's encrypted
  weights (``weights="private"``, 1 round each), or local products with plaintext
  weights (``"public"``, no communication: CrypTen truncates locally in 2PC);
* pooling / add / shape ops: local;
* ``relu``: CrypTen's exact ReLU (A2B + 64-bit adder + B2A + multiply: 9 rounds);
* ``mixed``: the site's public index sets gather positions locally; exact ReLU only
  on the kept positions, one secure square for the polynomial positions (public
  coefficients), the truncated sign (:mod:`mpc.circa_sign`) for Circa positions -
  the three in *shared rounds* (:func:`mpc.exchange.run_shared`: the site takes the
  rounds of the longest) - and a local scatter back; identity positions cost nothing.

:class:`OpMeter` wraps each op and records wall time and CrypTen's communication
counters (rounds, bytes as CrypTen counts them: send + receive of this party).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from mpc.circa_sign import truncated_relu
from mpc.exchange import run_shared
from mpc.launcher import SERVER
from mpc.lowering import Op, Plan, coeff_view, gather_positions

WeightsMode = Literal["private", "public"]


@dataclass
class OpStats:
    """Accumulated cost of one op over the recorded inferences."""

    seconds: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    crypten_bytes: list[int] = field(default_factory=list)


class OpMeter:
    """Per-op wall time and communication deltas (CrypTen stats must be verbose)."""

    def __init__(self) -> None:
        self.stats: dict[int, OpStats] = {}
        self.recording = False

    @contextmanager
    def __call__(self, i: int, op: Op) -> Iterator[None]:
        if not self.recording:
            yield
            return
        import crypten.communicator as comm

        c = comm.get()
        before = c.get_communication_stats()
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        after = c.get_communication_stats()
        s = self.stats.setdefault(i, OpStats())
        s.seconds.append(dt)
        s.rounds.append(int(after["rounds"] - before["rounds"]))
        s.crypten_bytes.append(int(after["bytes"] - before["bytes"]))


class EncryptedOps:
    """:class:`~mpc.lowering.OpBackend` over CrypTen ``MPCTensor`` s.

    ``plan`` is the full plan on the server and its :meth:`~Plan.public_view` on the
    client when ``weights="private"`` (then the client only knows weight shapes).
    Call :meth:`prepare` once (collectively, on every party) before executing.
    """

    def __init__(self, plan: Plan, *, weights: WeightsMode, device: torch.device) -> None:
        self.plan = plan
        self.weights = weights
        self.device = device
        self.params: dict[int, dict[str, Any]] = {}
        self.site_index: dict[int, dict[str, Tensor]] = {}

    # ---- preprocessing (once per model) -------------------------------------------
    def prepare(self) -> None:
        """Encrypt (private) or place (public) every weight; move site indices to the device."""
        import crypten

        for i, op in enumerate(self.plan.ops):
            prepared: dict[str, Any] = {}
            for name, t in op.params.items():
                if op.kind == "linear" and name == "weight":
                    name, t = "weight_t", t.t()
                if self.weights == "public":
                    if t.is_meta:
                        raise ValueError("public weights need the full plan on every party")
                    prepared[name] = t.to(torch.float64).to(self.device)
                else:
                    data = torch.zeros(t.shape, dtype=torch.float64) if t.is_meta else t.double()
                    prepared[name] = crypten.cryptensor(data.to(self.device), src=SERVER)
            if prepared:
                self.params[i] = prepared
            if op.site is not None:
                s = op.site
                self.site_index[i] = {
                    "relu": s.relu_idx.to(self.device), "circa": s.circa_idx.to(self.device),
                    "poly_quad": s.poly_idx[s.poly_quad].to(self.device),
                    "poly_lin": s.poly_idx[~s.poly_quad].to(self.device),
                }

    def _bias_shape(self, x: Any) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.dim() - 2)

    # ---- linear ---------------------------------------------------------------------
    def conv(self, i: int, op: Op, x: Any) -> Any:
        """2-d convolution of the MPCTensor ``x`` ``[B, C, H, W]`` with the prepared weights."""
        p, a = self.params[i], op.attrs
        y = x.conv2d(p["weight"], stride=a["stride"], padding=a["padding"],
                     dilation=a["dilation"], groups=a["groups"])
        if "bias" in p:
            y = y + p["bias"].view(1, -1, 1, 1)
        return y

    def linear(self, i: int, op: Op, x: Any) -> Any:
        """``x @ weight.T + bias`` on the MPCTensor ``x`` ``[B, in_features]``."""
        p = self.params[i]
        y = x.matmul(p["weight_t"])
        return y + p["bias"] if "bias" in p else y

    def affine(self, i: int, op: Op, x: Any) -> Any:
        """Per-channel ``x * scale + shift`` (an unfolded BatchNorm); shape unchanged."""
        p = self.params[i]
        shape = self._bias_shape(x)
        return x * p["scale"].view(shape) + p["shift"].view(shape)

    def avg_pool(self, i: int, op: Op, x: Any) -> Any:
        """2-d average pooling of the MPCTensor ``x`` (op's kernel size, stride, padding)."""
        a = op.attrs
        return x.avg_pool2d(a["kernel_size"], stride=a["stride"], padding=a["padding"])

    def adaptive_avg_pool(self, i: int, op: Op, x: Any) -> Any:
        """Adaptive average pooling to ``output_size`` (a plain pool when it divides)."""
        oh, ow = op.attrs["output_size"]
        h, w = x.size(-2), x.size(-1)
        if h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            return x.avg_pool2d(k, stride=k) if k != (1, 1) else x
        return x.adaptive_avg_pool2d((oh, ow))

    # ---- non-linear -----------------------------------------------------------------
    def max_pool(self, i: int, op: Op, x: Any) -> Any:
        """2-d max pooling: CrypTen's comparison tree, ``k*k - 1`` comparisons per output."""
        a = op.attrs
        return x.max_pool2d(a["kernel_size"], padding=a["padding"], stride=a["stride"],
                            dilation=a["dilation"])

    def relu(self, i: int, op: Op, x: Any) -> Any:
        """Exact ReLU on every element of ``x`` (CrypTen's comparison); shape unchanged."""
        return x.relu()

    def _poly(self, flat: Any, site: Any, pos: Tensor, *, quad: bool) -> Any:
        """``a0 + a1 x (+ a2 x^2)`` on the ``poly_quad`` (``quad``) / ``poly_lin`` positions."""
        mask = site.poly_quad if quad else ~site.poly_quad
        c = site.poly_coeffs.double().to(self.device)[mask.to(self.device)]
        sub = flat.index_select(1, pos)
        val = sub * coeff_view(c[:, 1], site)
        if quad:
            val = val + sub.square() * coeff_view(c[:, 2], site)  # the only secure product
        return val + coeff_view(c[:, 0], site)

    def mixed(self, i: int, op: Op, x: Any) -> Any:
        """Gather, evaluate exact ReLU / squares / Circa in shared rounds, scatter."""
        site = op.site
        assert site is not None
        idx = self.site_index[i]
        n_pos = site.positions
        n_relu, n_circa = idx["relu"].numel(), idx["circa"].numel()
        if n_relu == n_pos:
            return x.relu()
        if n_circa == n_pos:
            return truncated_relu(x, site.circa_k, site.circa_l)
        if n_relu + n_circa + idx["poly_quad"].numel() + idx["poly_lin"].numel() == 0:
            return x  # all identity
        flat = gather_positions(x, site)
        out = flat.clone()
        jobs: list[tuple[Tensor, Callable[[], Any]]] = []
        if n_relu:
            jobs.append((idx["relu"], lambda: flat.index_select(1, idx["relu"]).relu()))
        if n_circa:
            jobs.append((idx["circa"], lambda: truncated_relu(
                flat.index_select(1, idx["circa"]), site.circa_k, site.circa_l)))
        if idx["poly_quad"].numel():
            jobs.append((idx["poly_quad"],
                         lambda: self._poly(flat, site, idx["poly_quad"], quad=True)))
        for (pos, _), val in zip(jobs, run_shared([fn for _, fn in jobs]), strict=True):
            out[:, pos] = val
        if idx["poly_lin"].numel():
            out[:, idx["poly_lin"]] = self._poly(flat, site, idx["poly_lin"], quad=False)
        return out.view(x.size())


__all__ = ["EncryptedOps", "OpMeter", "OpStats", "WeightsMode"]
