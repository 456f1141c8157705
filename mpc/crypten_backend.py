"""CrypTen 0.4.1 backend: real 2-party encrypted inference of pi_opt artifacts.

Roles: party 0 is the **client** (encrypts the input with ``src=0``, is the only
party that decrypts the logits), party 1 the **server** (holds the model; with
``weights="private"`` it encrypts every weight with ``src=1``, and the client's
plan carries weight *shapes* only). The parent process lowers the model, ships
each party its plan, and compares the client's decrypted logits with the
plaintext model.

Timing: per timed repeat, both parties meet at a barrier, CrypTen's counters are
reset, then the client's input is shared, the plan executed and the logits
revealed to the client: that is the online latency (weights are encrypted once
beforehand, as a per-model preprocessing step). Reported: median over
``repeats`` after ``warmup`` untimed runs, from the client; rounds and bytes from
party 0 (with TTP they include the dealer traffic of party 0).

Accuracy: CrypTen's 16-bit fixed point truncates every product locally (error up
to 2**-16 per truncation, growing with the weights' magnitude through depth) and
fails with probability ~|x| * 2**-47 per truncation; decoding is exact
(:func:`mpc._compat.decode`). Measured max logit errors: ~1e-4 (resnet_mini,
resnet18 x0.25); tests assert <= 1e-2 and exact argmax agreement on inputs whose
plaintext top-2 margin exceeds 2e-2. Circa positions add their own (modelled)
faults, which the plaintext model simulates with independent random shares.
"""

from __future__ import annotations

import pickle
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpc.config import MpcConfig
from mpc.latency_model import plan_link_estimates
from mpc.launcher import run_parties
from mpc.lowering import Plan, lower
from mpc.party import Job, ModelJob, backend_name, party_main, resolve_device
from mpc.results import DemoResult, MpcReport, OpRecord
from pi_opt.artifacts import Artifact, load_artifact
from pi_opt.report.schema import MpcMeasurement

def _inputs(samples: int | Tensor, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    if isinstance(samples, Tensor):
        x = samples.float()
        if x.dim() == len(shape):
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"samples have shape {tuple(x.shape[1:])}, model expects {shape}")
        return x
    g = torch.Generator().manual_seed(seed)
    return torch.randn(int(samples), *shape, generator=g)


def _timed_input(inputs: Tensor, batch: int, shape: tuple[int, ...]) -> Tensor:
    if inputs.shape[0] == 0:
        return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    reps = -(-batch // inputs.shape[0])
    return inputs.repeat(reps, *([1] * len(shape)))[:batch].contiguous()


def _op_records(plan: Plan, stats: dict[int, tuple[list[float], list[int], list[int]]],
                batch: int) -> list[OpRecord]:
    records = []
    for i, (secs, rnds, nb) in sorted(stats.items()):
        op = plan.ops[i]
        cnt = op.counts()
        site = op.site
        cb = int(statistics.median(nb))
        records.append(OpRecord(
            index=i, name=op.name, kind=op.kind, category=op.category,
            seconds=statistics.median(secs), rounds=int(statistics.median(rnds)),
            crypten_bytes=cb, bytes_sent=cb // 2,
            relu=cnt["relu"] * batch, circa=cnt["circa"] * batch,
            circa_k=site.circa_k if site is not None and cnt["circa"] else None,
            circa_l=site.circa_l if site is not None and cnt["circa"] else None,
            poly_mults=cnt["poly_mults"] * batch,
            maxpool_comparisons=cnt["maxpool_comparisons"] * batch, macs=cnt["macs"] * batch,
        ))
    return records


def _category_sums(stats: dict[int, tuple[list[float], list[int], list[int]]], plan: Plan,
                   category: str, repeats: int) -> tuple[list[float], int]:
    """Per-repeat summed seconds of one op category, and its median summed CrypTen bytes."""
    idx = [i for i in stats if plan.ops[i].category == category]
    if not idx:
        return [0.0] * repeats, 0
    secs = [sum(stats[i][0][r] for i in idx) for r in range(repeats)]
    nb = [sum(stats[i][2][r] for i in idx) for r in range(repeats)]
    return secs, int(statistics.median(nb))


def _link_dict(cfg: MpcConfig) -> dict[str, float] | None:
    net = cfg.network
    if net is None or net.is_loopback:
        return None
    return {"rtt_ms": net.rtt_ms, **({"bandwidth_mbps": net.bandwidth_mbps}
                                     if net.bandwidth_mbps is not None else {})}


class CryptenBackend:
    """:class:`mpc.backend.Backend` on CrypTen (2 parties, gloo over loopback)."""

    name = "crypten"

    # ---- measurement ----------------------------------------------------------------
    def measure(self, artifact_dir: str | Path, *, samples: int | Tensor = 16,
                config: MpcConfig | None = None) -> MpcMeasurement:
        """Online latency (s), rounds, bytes and plaintext agreement of one artifact.

            ``samples``: number of N(0, 1) inputs, or images ``[N, C, H, W]`` normalized like the
            training data. Runs two CrypTen party processes; raises :class:`mpc.errors.MpcError`
            subclasses when lowering or the parties fail.
        """
        return self.measure_many([artifact_dir], samples=samples, config=config)[0].measurement

    def measure_report(self, artifact_dir: str | Path, *, samples: int | Tensor = 16,
                       config: MpcConfig | None = None) -> MpcReport:
        """:meth:`measure` with the per-op breakdown."""
        return self.measure_many([artifact_dir], samples=samples, config=config)[0]

    def measure_many(self, artifact_dirs: list[str | Path], *, samples: int | Tensor = 16,
                     config: MpcConfig | None = None) -> list[MpcReport]:
        """Measure several artifacts in one pair of party processes (saves start-up time)."""
        arts = [(str(d), load_artifact(d)) for d in artifact_dirs]
        return self.measure_models(arts, samples=samples, config=config)

    def measure_models(self, models: list[tuple[str, Artifact]], *,
                       samples: int | Tensor = 16, config: MpcConfig | None = None
                       ) -> list[MpcReport]:
        """Measure already loaded artifacts (``(label, artifact)`` pairs)."""
        cfg = config or MpcConfig()
        backend = backend_name()
        device = resolve_device(cfg.device)
        client_jobs, server_jobs, refs, plans = [], [], [], []
        for _, art in models:
            shape = tuple(art.manifest.spec.input_shape)
            plan = lower(art.model, shape, num_classes=art.manifest.spec.num_classes)
            x = _inputs(samples, shape)
            with torch.no_grad():
                refs.append(art.model(x).double() if x.shape[0] else None)
            public = plan.public_view() if cfg.weights == "private" else plan
            client_jobs.append(ModelJob(pickle.dumps(public), int(x.shape[0]), x,
                                         _timed_input(x, cfg.batch_size, shape)))
            server_jobs.append(ModelJob(pickle.dumps(plan), int(x.shape[0]), None, None))
            plans.append(plan)
        common: dict[str, Any] = dict(weights=cfg.weights, device=device, repeats=cfg.repeats,
                      warmup=cfg.warmup, batch_size=cfg.batch_size)
        out = run_parties(party_main, [Job(client_jobs, **common), Job(server_jobs, **common)],
                          provider=cfg.provider, device=device, threads=cfg.threads,
                          timeout_s=cfg.timeout_s, link=cfg.link)
        reports = []
        for k, ((label, art), plan) in enumerate(zip(models, plans, strict=True)):
            cres, sres = out[0][k], out[1][k]
            reports.append(self._report(label, plan, cres, sres, refs[k], cfg, backend, device))
        return reports

    @staticmethod
    def _report(label: str, plan: Plan, cres: dict[str, Any], sres: dict[str, Any],
                ref: Tensor | None, cfg: MpcConfig, backend: str, device: str) -> MpcReport:
        lat = statistics.median(cres["latencies"])
        rounds = int(statistics.median(cres["rounds"]))
        bytes_sent = int(statistics.median(cres["crypten_bytes"])) // 2
        lin, lin_b = _category_sums(cres["ops"], plan, "linear", cfg.repeats)
        non, non_b = _category_sums(cres["ops"], plan, "nonlinear", cfg.repeats)
        lin_s, non_s = statistics.median(lin), statistics.median(non)
        other = statistics.median(t - a - b for t, a, b in zip(cres["latencies"], lin, non,
                                                                 strict=True))
        agreement = max_err = None
        if ref is not None and cres["logits"] is not None:
            enc = cres["logits"].double()
            agreement = float((enc.argmax(1) == ref.argmax(1)).double().mean())
            max_err = float((enc - ref).abs().max())
        est = plan_link_estimates(cfg, plan, latency_s=lat, rounds=rounds,
                                  bytes_sent=bytes_sent, batch_size=cfg.batch_size)
        m = MpcMeasurement(
            backend=backend, provider=cfg.provider, device=device, batch_size=cfg.batch_size,
            latency_s=lat, latency_linear_s=lin_s, latency_nonlinear_s=non_s,
            latency_min_s=min(cres["latencies"]), latency_max_s=max(cres["latencies"]),
            rounds=rounds, bytes_per_party=bytes_sent,
            bytes_linear=lin_b // 2, bytes_nonlinear=non_b // 2,
            network=_link_dict(cfg), network_emulated=cfg.emulate_network,
            estimated_lan_s=est["lan"], estimated_wan_s=est["wan"],
            plaintext_agreement=agreement, max_logit_error=max_err, repeats=cfg.repeats,
        )
        return MpcReport(
            artifact=label, weights=cfg.weights, measurement=m,
            latency_other_s=max(0.0, other), latencies_s=cres["latencies"],
            estimated_s=est.get("configured"),
            counts=plan.counts(),
            server_rounds=int(statistics.median(sres["rounds"])),
            server_bytes_per_party=int(statistics.median(sres["crypten_bytes"])) // 2,
            ops=_op_records(plan, cres["ops"], cfg.batch_size),
            extra={"cpu_s": {"client": cres.get("cpu_s", []), "server": sres.get("cpu_s", [])}},
        )

    # ---- demo -----------------------------------------------------------------------
    def demo(self, artifact_dir: str | Path, image: Tensor, *,
             config: MpcConfig | None = None) -> DemoResult:
        """Encrypted inference of one image ``[C, H, W]`` (see :func:`mpc.demo.run_demo`)."""
        from mpc.demo import run_demo

        return run_demo(artifact_dir, image, config=config)


__all__ = ["CryptenBackend", "backend_name"]
