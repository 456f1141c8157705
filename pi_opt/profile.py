"""Exact per-sample ReLU, polynomial and MAC counts of a (prepared) model.

Counting rules (printed in every report):

* unit: scalar operations per input sample (batch excluded);
* ``relus``: elements evaluated with a secure comparison = exact ReLU + Circa ReLU;
* identity (linearized) elements count 0; polynomial elements count 0 ReLUs and
  1 secure multiplication each when the channel's x^2 coefficient is non-zero;
* max pooling adds ``k*k - 1`` comparisons per output (``maxpool_comparisons``);
* ``macs``: multiply-accumulates of Conv2d/Linear layers (FLOPs ~= 2 x MACs).

Counts are taken by running the model itself (forward hooks), so they describe
the artifact, not a surrogate.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from pi_opt.activations import Kind, MixedActivation
from pi_opt.layers import LayerProfile, protocol_layers
from pi_opt.sites import is_prepared, iter_sites, prepare_sites, stage_of


class SiteProfile(BaseModel):
    """One ReLU site: per-sample element counts by kind."""

    model_config = ConfigDict(extra="forbid")
    name: str
    stage: str
    shape: tuple[int, int, int]
    granularity: str
    elements: int
    relu: int
    circa: int
    poly: int
    identity: int
    poly_mults: int
    circa_k: int | None = None
    circa_l: int | None = None

    @property
    def kept(self) -> int:
        """Elements still paying for a comparison: exact ReLU plus Circa."""
        return self.relu + self.circa


class ModelProfile(BaseModel):
    """Totals and per-site table; every count is per input sample."""

    model_config = ConfigDict(extra="forbid")
    relus: int
    exact_relus: int
    circa_relus: int
    poly_elements: int
    poly_mults: int
    identity_elements: int
    site_elements: int
    maxpool_comparisons: int
    macs: int
    sites: list[SiteProfile]
    #: communicating non-site layers (conv/linear/unfolded BN, max-pool, functional
    #: ReLU) in execution order; None for a model fx cannot trace (or an old profile)
    layers: list[LayerProfile] | None = None
    #: per-sample elements of the output (revealed to the client); None as ``layers``
    output_elements: int | None = None

    def by_stage(self) -> dict[str, int]:
        """Kept ReLUs (exact + Circa) per stage."""
        out: dict[str, int] = defaultdict(int)
        for s in self.sites:
            out[s.stage] += s.kept
        return dict(out)


def _site_profile(name: str, site: MixedActivation) -> SiteProfile:
    assert site.input_shape is not None
    full = site.full_kinds()
    counts = {k: int((full == k).sum()) for k in Kind}
    poly_mults = 0
    if counts[Kind.POLY] and site.poly.numel():
        per_channel = (full == Kind.POLY).flatten(1).sum(1)
        quad = site.poly[:, 2].cpu() != 0
        poly_mults = int(per_channel[quad].sum())
    k, l, _ = (int(v) for v in site.circa_bits)
    return SiteProfile(
        name=name,
        stage=stage_of(name),
        shape=site.input_shape,
        granularity=site.granularity,
        elements=int(full.numel()),
        relu=counts[Kind.RELU],
        circa=counts[Kind.CIRCA],
        poly=counts[Kind.POLY],
        identity=counts[Kind.IDENTITY],
        poly_mults=poly_mults,
        circa_k=k if counts[Kind.CIRCA] else None,
        circa_l=l if counts[Kind.CIRCA] else None,
    )


def profile_model(model: nn.Module, input_shape: tuple[int, ...]) -> ModelProfile:
    """Count ReLUs/polynomials/MACs per sample for input ``(C, H, W)``.

    A model that is not yet prepared is profiled on a prepared deep copy
    (all sites exact ReLU); the caller's model is never modified.
    """
    if not is_prepared(model):
        model = prepare_sites(copy.deepcopy(model))
    macs = 0
    pool_cmp = 0

    def conv_hook(m: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            macs += int(out[0].numel()) * k
        elif isinstance(m, nn.Linear):
            macs += int(out[0].numel()) * m.in_features

    def pool_hook(m: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal pool_cmp
        assert isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
        ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
        pool_cmp += int(out[0].numel()) * (ks[0] * ks[1] - 1)

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.MaxPool2d):
            handles.append(m.register_forward_hook(pool_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    sites = [_site_profile(n, s) for n, s in iter_sites(model)]
    structure = protocol_layers(model.eval(), tuple(input_shape))
    model.train(was_training)
    return ModelProfile(
        relus=sum(s.kept for s in sites),
        exact_relus=sum(s.relu for s in sites),
        circa_relus=sum(s.circa for s in sites),
        poly_elements=sum(s.poly for s in sites),
        poly_mults=sum(s.poly_mults for s in sites),
        identity_elements=sum(s.identity for s in sites),
        site_elements=sum(s.elements for s in sites),
        maxpool_comparisons=pool_cmp,
        macs=macs,
        sites=sites,
        layers=structure[0] if structure else None,
        output_elements=structure[1] if structure else None,
    )


def count_relus(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Per-sample ReLU count (exact + Circa elements) of ``model`` on input ``(C, H, W)``;
    an unprepared model is counted on a prepared copy (every ReLU output element)."""
    return profile_model(model, input_shape).relus
