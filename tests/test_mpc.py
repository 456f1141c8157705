"""Tests of the MPC backend (``mpc``): lowering, real 2-party CrypTen runs, cost model.

Encrypted-vs-plaintext bound: CrypTen's 16-bit fixed point truncates each product
locally, so logits differ from float32 by accumulated rounding; on the test
network (resnet_mini widths (4, 8, 16)) we assert ``max |logit error| <= 1e-2``
(observed: ~1e-4) and exact argmax agreement on inputs whose plaintext top-2
margin exceeds twice that bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mpc.circa_sign import (
    crypten_bytes_per_element,
    pack_bits,
    pack_lanes,
    rounds,
    unpack_bits,
    unpack_sign_bits,
)
from mpc.config import NETWORK_PRESETS, MpcConfig, NetworkConfig, link_estimates
from mpc.errors import LoweringError, MpcUnavailable, PartyFailed, PartyTimeout
from mpc.latency_model import (
    CostCounts,
    CostSample,
    LatencyModel,
    counts_from_profile,
    estimate_rounds,
    fit,
    plan_counts,
    plan_rounds,
)
from mpc.launcher import run_parties
from mpc.lowering import lower, run_plain
from pi_opt.activations import Kind
from pi_opt.artifacts import ArchSpec, ModelSpec, load_artifact, save_artifact
from pi_opt.circa_faults import encode_fixed, exact_range, truncated_sign_bits
from pi_opt.costmodel import default_cost_model
from pi_opt.errors import ConfigError
from pi_opt.models import create_model
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites, materialize_all, prepare_sites

pytestmark = pytest.mark.mpc

LOGIT_BOUND = 1e-2
ROOT = Path(__file__).resolve().parents[1]
TINY = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 8, 16]}),
                 input_shape=(1, 8, 8), num_classes=10)


# --------------------------------------------------------------------------- helpers


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics/affine and larger FC weights (well separated logits)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
        elif isinstance(m, nn.Linear):
            m.weight.data.mul_(8.0)
    return model.eval()


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _randomize(prepare_sites(TINY.build()), seed)
    materialize_all(model, torch.zeros(1, *TINY.input_shape))
    return model


def _keep_fraction(model: nn.Module, frac: float, seed: int) -> nn.Module:
    """Exact ReLU on round(frac * n) random positions per site, identity elsewhere."""
    g = torch.Generator().manual_seed(seed)
    for _, site in iter_sites(model):
        n = site.kinds.numel()
        kinds = torch.full((n,), int(Kind.IDENTITY), dtype=torch.int8)
        kinds[torch.randperm(n, generator=g)[:max(1, round(frac * n))]] = int(Kind.RELU)
        site.set_kinds(kinds.view(site.kinds.shape))
    return model


def _reduced(model: nn.Module, seed: int) -> nn.Module:
    """Half IDENTITY, a sixth each RELU / POLY / CIRCA(k=4, l=16) per site."""
    g = torch.Generator().manual_seed(seed)
    for _, site in iter_sites(model):
        n = site.kinds.numel()
        perm = torch.randperm(n, generator=g)
        kinds = torch.full((n,), int(Kind.IDENTITY), dtype=torch.int8)
        third = n // 6
        kinds[perm[:third]] = int(Kind.RELU)
        kinds[perm[third:2 * third]] = int(Kind.POLY)
        kinds[perm[2 * third:3 * third]] = int(Kind.CIRCA)
        site.set_kinds(kinds.view(site.kinds.shape))
        c = site.input_shape[0]
        site.set_poly(torch.stack([torch.full((c,), 0.05), torch.full((c,), 0.5),
                                   torch.rand(c, generator=g) * 0.2], dim=1))
        site.set_circa(4, 16)
    return model


def _inputs(n: int = 8, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, *TINY.input_shape, generator=torch.Generator().manual_seed(seed))


def _margins(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


# --------------------------------------------------------------------------- no processes


def test_import_mpc_and_pi_opt_never_import_crypten() -> None:
    code = ("import sys, mpc, mpc.latency_model, mpc.lowering, mpc.crypten_backend, mpc.demo, "
            "mpc.cli, pi_opt.artifacts, pi_opt.profile; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'crypten']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize(("name", "kwargs", "shape", "granularity"), [
    ("resnet_mini", {"widths": (4, 8, 16)}, (1, 8, 8), "element"),
    ("resnet", {"widths": (4, 8), "blocks": (1, 1), "input_downsample": 2, "stem_relu": True},
     (3, 16, 16), "channel"),
    ("wrn", {"depth": 10, "widen": 1}, (3, 16, 16), "element"),            # standalone BN
    ("vgg16", {"width_mult": 0.0625, "pool": "max"}, (3, 32, 32), "channel"),
    ("mobilenet_v2", {"width_mult": 0.125, "expansion": 2, "blocks": (1, 2, 1, 1, 1, 1, 1),
                      "head_width": 32}, (3, 16, 16), "element"),        # depthwise convs
])
def test_lowering_matches_model_and_profile(name: str, kwargs: dict, shape: tuple,
                                            granularity: str) -> None:
    g = torch.Generator().manual_seed(0)
    model = _randomize(create_model(name, in_channels=shape[0], num_classes=10, **kwargs), 1)
    x = torch.randn(3, *shape, generator=g)
    plan = lower(model, shape)
    with torch.no_grad():
        assert torch.allclose(run_plain(plan, x), model(x), atol=1e-5)
    # every BN right after a conv is folded away
    assert not any(op.kind == "affine" for op in plan.ops) or name == "wrn"
    prepared = prepare_sites(model)
    materialize_all(prepared, x[:1], granularity=granularity)
    for _, site in iter_sites(prepared):
        site.set_kinds(torch.randint(0, 3, site.kinds.shape, generator=g))
        site.set_poly(torch.randn(site.input_shape[0], 3, generator=g) * 0.1)
    plan = lower(prepared, shape)
    with torch.no_grad():
        assert torch.allclose(run_plain(plan, x), prepared(x), atol=1e-5)
    prof, counts = profile_model(prepared, shape), plan.counts()
    assert counts["relu"] == prof.exact_relus and counts["circa"] == prof.circa_relus
    assert counts["poly_mults"] == prof.poly_mults and counts["macs"] == prof.macs
    assert counts["maxpool_comparisons"] == prof.maxpool_comparisons


def test_lowering_public_view_and_errors() -> None:
    model = _reduced(_tiny(), seed=1)
    plan = lower(model, TINY.input_shape)
    pub = plan.public_view()
    weights = [t for op in pub.ops for t in op.params.values()]
    assert weights and all(t.is_meta for t in weights)
    assert all(torch.equal(a.site.relu_idx, b.site.relu_idx)
               for a, b in zip(plan.ops, pub.ops, strict=True) if a.site is not None)
    with pytest.raises(LoweringError, match="Sigmoid"):
        lower(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Sigmoid()), (4,))


def test_circa_packing_helpers() -> None:
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (131,), generator=g)
    assert torch.equal(unpack_bits(pack_bits(bits), 131), bits)
    for l in (4, 8, 16, 20):
        vals = torch.randint(0, 2**l, (37,), generator=g)
        words = pack_lanes(vals, l)
        assert words.numel() == -(-37 // (64 // l))
        assert torch.equal(unpack_sign_bits(words, l, 37), (vals >> (l - 1)) & 1)
    assert rounds(16) == 7 and rounds(8) == 6 and rounds(64) == 9
    assert crypten_bytes_per_element(16) == pytest.approx(104.25)


def test_config_and_network_estimate() -> None:
    assert MpcConfig(network="wan").network == NETWORK_PRESETS["wan"]
    with pytest.raises(ValueError, match="unknown network profile"):
        MpcConfig(network="moon")
    with pytest.raises(ValueError, match="bandwidth_mbps must be a finite number > 0"):
        MpcConfig(network={"rtt_ms": 5, "bandwidth_mbps": 0})
    with pytest.raises(ValueError, match="emulate_network needs a network"):
        MpcConfig(emulate_network=True)
    with pytest.raises(ValueError):
        MpcConfig(repeat=3)  # typo: extra fields are refused
    net = NetworkConfig(rtt_ms=10.0, bandwidth_mbps=80.0)
    # 0.2 s + 20 rounds * 10 ms + 1e6 B * 8 / 80e6 b/s
    assert 0.2 + net.network_s(rounds=20, bytes_sent=10**6) == pytest.approx(0.5)
    emu = MpcConfig(network=net, emulate_network=True)
    assert emu.link == (10.0, 80.0)
    run = CostCounts(rounds=20, bytes=10**6)
    est = link_estimates(emu, latency_s=0.5, counts=run)
    assert est["loopback"] == pytest.approx(0.2) and est["configured"] == 0.5
    # with 4 ms of every round's delay hidden behind compute: 20 x (10 + 5 - 4) ms
    est = link_estimates(emu, latency_s=0.5, counts=run, hidden_s=4e-3)
    assert est["loopback"] == pytest.approx(0.5 - 20 * 11e-3)


def test_link_overlap_fit_recovers_a_known_overlap() -> None:
    """fit_hidden on emulated runs generated with 1.3 ms hidden per round."""
    from mpc.latency_model import LinkSample, fit_hidden

    rng = np.random.default_rng(0)
    samples = []
    for rtt, bw in ((1.0, 1000.0), (4.0, 1000.0), (10.0, 100.0), (0.5, 1000.0)):
        net = NetworkConfig(rtt_ms=rtt, bandwidth_mbps=bw)
        for _ in range(5):
            traffic = [(float(rng.integers(1, 10)), float(rng.integers(0, 10**6)))
                       for _ in range(12)]
            loop = float(rng.uniform(0.2, 2.0))
            samples.append(LinkSample(
                loopback_s=loop, traffic=traffic, network=net,
                emulated_s=loop + net.traffic_s(traffic, hidden_s=1.3e-3)))
    assert fit_hidden(samples) == pytest.approx(1.3e-3, abs=2e-6)
    assert all(abs(s.error(1.3e-3)) < 1e-12 for s in samples)
    with pytest.raises(ValueError, match="at least one"):
        fit_hidden([])


def test_latency_model_fits_synthetic_data_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = LatencyModel(per_relu_s=3.5e-6, per_circa_s={8: 0.6e-6, 16: 1.1e-6},
                         per_mult_s=0.2e-6, per_mac_s=2e-9, per_byte_s=5e-9, per_round_s=3e-3,
                         per_inference_s=0.02)
    samples = []
    for _ in range(40):
        c = CostCounts(relus=float(rng.integers(0, 10**5)),
                       circa={8: float(rng.integers(0, 10**5)), 16: float(rng.integers(0, 10**5))},
                       poly_mults=float(rng.integers(0, 10**5)), macs=float(rng.integers(0, 10**8)),
                       bytes=float(rng.integers(0, 10**8)),
                       rounds=float(rng.integers(1, 200)), inferences=float(rng.integers(0, 2)))
        samples.append(CostSample(**c.model_dump(), seconds=truth.predict_counts(c)))
    fitted = fit(samples, meta={"source": "synthetic"})
    for field in ("per_relu_s", "per_mult_s", "per_mac_s", "per_byte_s", "per_round_s",
                  "per_inference_s"):
        assert getattr(fitted, field) == pytest.approx(getattr(truth, field), rel=1e-6), field
    for l in (8, 16):
        assert fitted.per_circa_s[l] == pytest.approx(truth.per_circa_s[l], rel=1e-6)
    # profile-based prediction = plan-based prediction; JSON round trip is exact
    model = _reduced(_tiny(), seed=2)
    prof = profile_model(model, TINY.input_shape)
    c = counts_from_profile(prof, batch_size=2)
    assert c.relus == 2 * prof.exact_relus and c.circa == {16: 2.0 * prof.circa_relus}
    assert estimate_rounds(prof) == 7 * 9  # 7 sites: ReLU + square + Circa in shared rounds
    assert c.rounds == estimate_rounds(prof) + 10 + 1  # + 9 conv + 1 fc (BN folded) + reveal
    plan = lower(model, TINY.input_shape)
    pc = plan_counts(plan, batch_size=2)
    assert pc == c
    assert fitted.predict(prof, batch_size=2) == pytest.approx(truth.predict_counts(c), rel=1e-6)
    fitted.save(tmp_path / "lat.json")
    assert LatencyModel.load(tmp_path / "lat.json") == fitted
    with pytest.raises(ValueError):
        fit([])


# --------------------------------------------------------------------------- 2-party runs


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One pair of party processes measuring four artifacts (plain, reduced, 100%, 10%)."""
    from mpc.crypten_backend import CryptenBackend

    root = tmp_path_factory.mktemp("mpc_artifacts")
    models = {"plain": _tiny(0), "reduced": _reduced(_tiny(0), seed=1),
              "keep100": _keep_fraction(_tiny(0), 1.0, seed=2),
              "keep10": _keep_fraction(_tiny(0), 0.1, seed=2)}
    for name, m in models.items():
        save_artifact(m, TINY, root / name)
    x = _inputs()
    reports = CryptenBackend().measure_many(
        [root / n for n in models], samples=x, config=MpcConfig(repeats=2, timeout_s=240))
    return {"x": x, "models": models, "root": root,
            "reports": dict(zip(models, reports, strict=True))}


def test_encrypted_matches_plaintext(measured: dict) -> None:
    model, x = measured["models"]["plain"], measured["x"]
    assert _margins(model, x).min() > 2 * LOGIT_BOUND  # precondition: argmax is well defined
    m = measured["reports"]["plain"].measurement
    assert m.plaintext_agreement == 1.0
    assert m.max_logit_error is not None and 0 < m.max_logit_error <= LOGIT_BOUND
    assert m.rounds == plan_rounds(lower(model, TINY.input_shape)) == 7 * 9 + 10 + 1
    assert m.bytes_per_party == plan_counts(lower(model, TINY.input_shape)).bytes > 0
    assert m.latency_s > 0
    cpu = measured["reports"]["plain"].extra["cpu_s"]  # per party, per timed repeat
    assert len(cpu["client"]) == len(cpu["server"]) == 2 and min(cpu["client"]) > 0
    assert m.latency_linear_s and m.latency_nonlinear_s
    assert m.latency_linear_s + m.latency_nonlinear_s <= m.latency_s * 1.01
    assert m.bytes_linear + m.bytes_nonlinear <= m.bytes_per_party
    # link estimates: per-layer traffic of the plan, with the fitted overlap per round
    traffic = plan_counts(lower(model, TINY.input_shape)).traffic
    hidden = default_cost_model().hidden_per_round_s
    assert m.estimated_wan_s == pytest.approx(m.latency_s + NETWORK_PRESETS["wan"].traffic_s(
        traffic, hidden_s=hidden))
    assert m.estimated_wan_s > m.estimated_lan_s >= m.latency_s


def test_reduced_model_matches_plaintext(measured: dict) -> None:
    model, x = measured["models"]["reduced"], measured["x"]
    # precondition: Circa (4, 16) is exact for |x| < 8 except positives below 2**-12
    acts: list[float] = []
    hooks = [s.register_forward_hook(lambda m, i, o: acts.append(float(i[0].abs().max())))
             for _, s in iter_sites(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert max(acts) < exact_range(4, 16) / 2
    assert _margins(model, x).min() > 2 * LOGIT_BOUND
    rep = measured["reports"]["reduced"]
    assert rep.measurement.plaintext_agreement == 1.0
    assert rep.measurement.max_logit_error <= LOGIT_BOUND
    prof = load_artifact(measured["root"] / "reduced").manifest.profile
    assert rep.counts["relu"] == prof.exact_relus and rep.counts["circa"] == prof.circa_relus
    mixed = [o for o in rep.ops if o.kind == "mixed"]
    assert len(mixed) == 7 and all(o.circa_k == 4 and o.circa_l == 16 for o in mixed)
    # exact ReLU + square + truncated sign in shared rounds: max(9, 1, 7), not 9 + 1 + 7
    assert all(o.rounds == 9 for o in mixed)
    counted = plan_counts(lower(model, TINY.input_shape))
    assert rep.measurement.rounds == counted.rounds
    assert rep.measurement.bytes_per_party == counted.bytes


def test_subset_relu_does_proportionally_less_work(measured: dict) -> None:
    full, sub = measured["reports"]["keep100"], measured["reports"]["keep10"]
    kept_ratio = full.counts["relu"] / sub.counts["relu"]
    assert 9.0 < kept_ratio < 11.0
    ratio = full.measurement.bytes_nonlinear / sub.measurement.bytes_nonlinear
    assert ratio == pytest.approx(kept_ratio, rel=0.01)
    for op in full.ops + sub.ops:  # CrypTen's ReLU: 464 counted bytes, 9 rounds per layer
        if op.category == "nonlinear":
            assert op.crypten_bytes == 464 * op.relu and op.rounds == 9
    assert full.measurement.bytes_linear == sub.measurement.bytes_linear
    # Time is not asserted here: with <= 256 elements per site this network is in the
    # round-bound regime (9 rounds x ~3 ms per site); bench/mpc_relu_scaling.py shows
    # the time falling with kept ReLUs on a network where elements dominate.


def _circa_party(rank: int, values: torch.Tensor) -> dict:
    """Party body: truncated sign / ReLU on real shares vs the plaintext fault model."""
    import crypten
    import crypten.communicator as comm

    from mpc.circa_sign import truncated_ltz, truncated_relu

    c = comm.get()
    x = crypten.cryptensor(values, src=0)
    s0, s1 = c.all_gather(x.share)
    out = {}
    for k, l in [(0, 64), (4, 16), (12, 16), (12, 8), (8, 8), (16, 4)]:
        bits = truncated_ltz(x, k, l).reveal()
        c.reset_communication_stats()
        relu = truncated_relu(x, k, l)
        st = c.get_communication_stats()
        out[(k, l)] = {"bits": bits, "relu": relu.reveal(), "rounds": st["rounds"],
                       "bytes": st["bytes"]}
    return {"s0": s0, "s1": s1, "results": out}


def test_circa_truncated_sign_on_shares_equals_fault_model() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.cat([
        torch.randn(3000, generator=g),
        torch.rand(500, generator=g) * 2**-12, torch.rand(500, generator=g) * 2**-4,
        -torch.rand(500, generator=g) * 2**-4, torch.tensor([0.0, 2**-16, -2**-16, 7.9, -7.9]),
    ])
    res = run_parties(_circa_party, [values, values], timeout_s=120)[0]
    s0, s1 = res["s0"], res["s1"]
    x_enc = encode_fixed(values)
    assert torch.equal(s0 + s1, x_enc)  # the shares really encode the input
    for (k, l), r in res["results"].items():
        want = truncated_sign_bits(s0, s1, k, l)
        assert torch.equal(r["bits"], want), (k, l)
        assert torch.equal(r["relu"], x_enc * (1 - want)), (k, l)  # exact: bit has scale 1
        # Exact range of the fault model, in encoded units: -2**(k+l-1) + 2**k <= x_enc <
        # 2**(k+l-1) (the lowest 2**k bucket can lose its carry and wrap to positive),
        # except the PosZero band 0 <= x_enc < 2**k, where the sign may read negative.
        top = 2 ** (k + l - 1) if l < 64 else 2**63 - 1
        inside = (x_enc < top) & (x_enc >= -top + 2**k)
        band = (x_enc >= 0) & (x_enc < 2**k)
        truth = (x_enc < 0).long()
        assert torch.equal(want[inside & ~band], truth[inside & ~band]), (k, l)
        if k > 0:  # negatives are never passed; some positives in the band are zeroed
            assert want[inside & (x_enc < 0)].all()
            assert want[band].any()  # and the band really faults (probability ~1 - x/2**k)
        assert r["rounds"] == rounds(l)
        assert r["bytes"] / values.numel() == pytest.approx(crypten_bytes_per_element(l),
                                                            rel=0.01)


def _failing_party(rank: int, mode: str) -> None:
    import crypten.communicator as comm

    if rank == 1:
        if mode == "die":
            os._exit(7)
        if mode == "raise":
            raise RuntimeError("server exploded")
        time.sleep(3600)  # "hang"
    comm.get().barrier()  # party 0 blocks on the missing peer
    time.sleep(3600)


@pytest.mark.parametrize("mode", ["die", "raise"])
def test_failed_party_gives_clean_error(mode: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(PartyFailed, match="party 1") as info:
        run_parties(_failing_party, [mode, mode], timeout_s=120)
    assert time.monotonic() - t0 < 60
    if mode == "raise":
        assert "server exploded" in str(info.value)
        assert "RuntimeError" in info.value.details["traceback"]


@pytest.mark.slow
def test_hung_party_times_out() -> None:
    t0 = time.monotonic()
    with pytest.raises(PartyTimeout, match="15 s"):
        run_parties(_failing_party, ["hang", "hang"], timeout_s=15)
    assert time.monotonic() - t0 < 25


def test_unseen_architecture_costs_as_counted(tmp_path: Path) -> None:
    """VGG with max-pool (not in the latency fit), batch 2: measured rounds and bytes
    equal the counts of the profile (what the search uses) and of the lowered plan."""
    from mpc.crypten_backend import CryptenBackend

    spec = ModelSpec(arch=ArchSpec(name="vgg16", kwargs={"width_mult": 0.0625, "pool": "max"}),
                     input_shape=(3, 32, 32), num_classes=10)
    torch.manual_seed(0)
    model = _randomize(prepare_sites(spec.build()), 0)
    materialize_all(model, torch.zeros(1, *spec.input_shape), granularity="channel")
    _reduced(model, seed=4)
    save_artifact(model, spec, tmp_path / "vgg")
    rep = CryptenBackend().measure_report(
        tmp_path / "vgg", samples=2,
        config=MpcConfig(repeats=1, warmup=0, batch_size=2, timeout_s=400))
    m = rep.measurement
    prof = load_artifact(tmp_path / "vgg").manifest.profile
    counted = counts_from_profile(prof, batch_size=2)
    assert counted == plan_counts(lower(model, spec.input_shape), batch_size=2)
    assert m.rounds == counted.rounds and m.bytes_per_party == counted.bytes
    assert [o.rounds for o in rep.ops if o.kind == "max_pool"] == [46] * 5  # 2x2 windows
    assert m.plaintext_agreement is not None and m.max_logit_error <= LOGIT_BOUND


def test_emulated_wan_measurement(measured: dict) -> None:
    """The emulated link adds at least rounds x RTT + bytes / bandwidth to the measured
    latency and no more than that plus the loopback latency's noise."""
    from mpc.crypten_backend import CryptenBackend

    net = NetworkConfig(rtt_ms=20.0, bandwidth_mbps=50.0)
    rep = CryptenBackend().measure_report(
        measured["root"] / "plain", samples=2,
        config=MpcConfig(network=net, emulate_network=True, repeats=1, timeout_s=240))
    m, loop = rep.measurement, measured["reports"]["plain"].measurement
    assert m.network_emulated and m.rounds == loop.rounds
    link_s = net.network_s(rounds=m.rounds, bytes_sent=m.bytes_per_party)
    assert link_s > 1.0  # 75 rounds x 20 ms
    assert m.latency_s >= link_s
    assert m.latency_s <= link_s + 3 * loop.latency_s + 0.5
    assert rep.estimated_s == m.latency_s and m.plaintext_agreement == 1.0


def test_ttp_with_public_weights(measured: dict) -> None:
    from mpc.crypten_backend import CryptenBackend

    rep = CryptenBackend().measure_report(
        measured["root"] / "plain", samples=measured["x"][:4],
        config=MpcConfig(provider="TTP", weights="public", repeats=1, timeout_s=240))
    m = rep.measurement
    assert m.provider == "TTP" and m.plaintext_agreement == 1.0
    assert m.max_logit_error <= LOGIT_BOUND
    assert m.bytes_linear == 0  # plaintext weights: linear layers are local


def test_cli_demo_and_measure(measured: dict, tmp_path: Path) -> None:
    art = measured["root"] / "reduced"
    out = tmp_path / "demo.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "mpc", "demo", str(art), "--index", "5", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    demo = json.loads(out.read_text())
    assert demo["agrees"] and demo["prediction"] == demo["plaintext_prediction"]
    assert demo["max_logit_error"] <= LOGIT_BOUND and demo["rounds"] > 0
    assert len(demo["logits"]) == 10 and 0 <= demo["label"] < 10


def test_cli_and_make_measure_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpc.measure import make_measure
    from pi_opt_cli import main

    # ``pi-opt mpc measure ...``; fails before any party starts
    assert main(["mpc", "measure", str(tmp_path / "missing")]) == 2
    assert "artifact manifest not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="repeat"):
        make_measure({"repeat": 2})
    with pytest.raises(ConfigError, match="samples"):
        make_measure({"samples": -1})
    assert callable(make_measure({"provider": "TTP", "samples": 4, "network": "lan"}))
    from mpc.backend import Backend, get_backend

    assert isinstance(get_backend("crypten"), Backend)
    with pytest.raises(MpcUnavailable):
        get_backend("spu")
