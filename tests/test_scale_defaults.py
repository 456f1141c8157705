"""Scale-correct SNL / AutoReP defaults at CIFAR shape.

Setup: ResNet-18 (CIFAR variant, no stem ReLU) at 1/8 width on 3x32x32 inputs:
61,440 ReLUs per sample (the full-width net has 491,520 - the same spatial layout,
27x the digits nets of the other tests); a learnable synthetic 10-class task
(class templates + noise), 256 training images at batch 32 (8 steps per epoch).
The teacher is trained one epoch. Budget: 10 % of the ReLUs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.data import DataBundle
from pi_opt.errors import ConfigError
from pi_opt.profile import profile_model
from pi_opt.sites import materialize_all, prepare_sites
from pi_opt.techniques import TechniqueContext
from pi_opt.techniques._masks import PAPER_MASK_LR, scaled_mask_lr
from pi_opt.techniques.autorep import AutoReP, AutoRePConfig
from pi_opt.techniques.base import baseline_candidate
from pi_opt.techniques.snl import SNL, SNL_PAPER_LAMBDA, SNLConfig
from pi_opt.training import TrainConfig, fit

K = 10
BATCH = 32


def _split(templates: torch.Tensor, n: int, gen: torch.Generator) -> TensorDataset:
    y = torch.arange(n) % K
    return TensorDataset(templates[y] + 0.8 * torch.randn(n, 3, 32, 32, generator=gen), y)


@pytest.fixture(scope="module")
def cifar_ctx(tmp_path_factory) -> TechniqueContext:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    templates = F.interpolate(torch.randn(K, 3, 8, 8, generator=gen), size=32, mode="bilinear")
    data = DataBundle(name="cifar-shape", train=_split(templates, 256, gen),
                      val=_split(templates, 64, gen), test=_split(templates, 64, gen),
                      num_classes=K, input_shape=(3, 32, 32),
                      class_names=[str(i) for i in range(K)], mean=(0.0,) * 3, std=(1.0,) * 3)
    spec = ModelSpec(arch=ArchSpec(name="resnet18", kwargs={"width_mult": 0.125}),
                     input_shape=(3, 32, 32), num_classes=K)
    torch.manual_seed(0)
    teacher = prepare_sites(spec.build())
    materialize_all(teacher, data.train.tensors[0][:1])
    fit(teacher, data.train, data.val, TrainConfig(epochs=1, lr=0.05, batch_size=BATCH, seed=0))
    prof = profile_model(teacher, spec.input_shape)
    assert prof.relus == 491_520 // 8
    yield TechniqueContext(spec=spec, data=data, teacher=teacher.eval(), baseline_profile=prof,
                           finetune=TrainConfig(epochs=0, lr=0.01, batch_size=BATCH, seed=0),
                           workdir=tmp_path_factory.mktemp("work"), seed=0)
    torch.set_num_threads(threads)


def _per_epoch(ctx: TechniqueContext, run) -> tuple[list[dict], list]:
    events: list[dict] = []
    ctx.progress = events.append
    try:
        cands = run()
    finally:
        ctx.progress = None
    return [e for e in events if e.get("type") == "technique" and "epoch" in e
            and "event" not in e], cands


def test_snl_live_count_falls_gradually(cifar_ctx) -> None:
    n = cifar_ctx.baseline_profile.relus
    budget = n // 10
    epochs, (cand,) = _per_epoch(cifar_ctx, lambda: SNL(max_search_epochs=4, finetune_epochs=0)
                                 .run(cifar_ctx, baseline_candidate(cifar_ctx), budget=budget))
    counts = [e["relus"] for e in epochs]
    assert len(counts) == 4
    assert counts[0] > budget  # no collapse past the budget in the first epoch
    assert all(c > budget for c in counts)  # nor later: it descends
    assert counts[-1] < n  # ... but it does descend
    drops = [a - b for a, b in zip([n, *counts], counts)]
    assert max(drops) <= n // 2, counts  # never half the network in one epoch
    # the bound was hit: noted in the candidate, its history and the warning
    assert cand.notes["search_bound_hit"] and not cand.notes["budget_reached"]
    assert "max_search_epochs=4" in cand.notes["warning"]
    assert cand.history[-1]["search_bound_hit"] is True
    assert cand.history[-1]["mask_lr"] == pytest.approx(PAPER_MASK_LR * 391 / 8)


def test_snl_old_unnormalised_penalty_collapses(cifar_ctx) -> None:
    """Control: the old default (1e-2 on the un-normalised sum = 1e-2 x N here) wipes
    out the mask past the budget within one epoch, which the test above would catch."""
    n = cifar_ctx.baseline_profile.relus
    budget = n // 10
    epochs, _ = _per_epoch(cifar_ctx, lambda: SNL(
        max_search_epochs=4, finetune_epochs=0, lambda_init=1e-2 * n)
        .run(cifar_ctx, baseline_candidate(cifar_ctx), budget=budget))
    counts = [e["relus"] for e in epochs]
    assert any(a >= n // 2 and b < budget for a, b in zip([n, *counts], counts)), counts


def test_autorep_density_moves_to_target(cifar_ctx) -> None:
    n = cifar_ctx.baseline_profile.relus
    budget = n // 10
    epochs, (cand,) = _per_epoch(cifar_ctx, lambda: AutoReP(search_epochs=3, finetune_epochs=0)
                                 .run(cifar_ctx, baseline_candidate(cifar_ctx), budget=budget))
    dens = [e["density"] for e in epochs]
    assert all(b < a for a, b in zip([1.0, *dens], dens)), dens  # monotone toward the target
    assert dens[-1] < 0.75 and min(dens) >= budget / n  # moving, not overshooting
    assert profile_model(cand.model, cand.spec.input_shape).relus <= budget
    assert cand.history[-1]["mask_lr"] == pytest.approx(PAPER_MASK_LR * 391 / 8)


def test_scaled_mask_lr_is_the_papers_on_cifar() -> None:
    def ctx(images: int, batch: int) -> SimpleNamespace:
        return SimpleNamespace(data=SimpleNamespace(train=range(images)),
                               finetune=SimpleNamespace(batch_size=batch))

    assert scaled_mask_lr(ctx(50_000, 128)) == pytest.approx(1e-3)  # type: ignore[arg-type]
    assert scaled_mask_lr(ctx(100_000, 128)) == pytest.approx(1e-3 * 391 / 782)  # type: ignore[arg-type]
    assert scaled_mask_lr(ctx(1_221, 64)) == pytest.approx(1e-3 * 391 / 20)  # type: ignore[arg-type]
    assert scaled_mask_lr(ctx(64, 64)) == 0.05  # capped  # type: ignore[arg-type]


def test_presets_fill_unset_fields_only() -> None:
    fast, paper = SNLConfig(), SNLConfig(preset="paper")
    assert fast.lambda_init == paper.lambda_init == pytest.approx(1e-5 * 491_520)
    assert SNL_PAPER_LAMBDA == pytest.approx(4.9152)
    assert (paper.lambda_growth, paper.warmup_epochs, paper.mask_lr,
            paper.max_search_epochs) == (1.1, 5, 1e-3, 2000)
    assert fast.mask_lr is None and fast.max_search_epochs == 200
    assert SNLConfig(preset="paper", max_search_epochs=300).max_search_epochs == 300
    ar = AutoRePConfig(preset="paper")
    assert (ar.search_epochs, ar.lam, ar.mask_lr, ar.finetune_epochs, ar.mask_dropout) == (
        200, 40.0, 1e-3, 0, 0.01)
    assert AutoRePConfig().mask_dropout == 0.01 and AutoRePConfig().mask_lr is None
    with pytest.raises(ConfigError):
        SNL(preset="unpublished")


def test_autorep_under_bf16_autocast_keeps_fp32_gates(cifar_ctx) -> None:
    """Mixed precision: the search runs under bf16 autocast; gates stay float32."""
    import dataclasses

    ctx = dataclasses.replace(cifar_ctx, finetune=cifar_ctx.finetune.model_copy(
        update={"precision": "bf16"}))
    n = ctx.baseline_profile.relus
    epochs, (cand,) = _per_epoch(ctx, lambda: AutoReP(search_epochs=1, finetune_epochs=0)
                                 .run(ctx, baseline_candidate(ctx), budget=n // 10))
    assert epochs and 0.0 < epochs[0]["density"] < 1.0
    assert profile_model(cand.model, cand.spec.input_shape).relus <= n // 10
    for p in cand.model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
