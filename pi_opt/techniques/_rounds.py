"""Round-aware penalties of the learned-mask techniques (SNL, AutoReP) under ``objective: latency``.

On a link, a site that keeps *any* exact ReLU pays the ReLU protocol's rounds
(:data:`~pi_opt.costmodel.RELU_ROUNDS`, shared by every element of the site, see
:func:`pi_opt.costmodel.site_cost`) while each kept ReLU pays its bytes. Under the job's
profile and cost model, one site's rounds are worth

    round_weight_s = extra_rounds_s * seconds_per_round / seconds_saved_per_dropped_relu

ReLUs ("ReLU equivalents": 9 rounds on WAN, 50 ms RTT and 100 Mb/s, are ~23,000 ReLUs'
bytes). The penalties then price a mask as its predicted latency in ReLU equivalents,

    sum_s (sum_i n_i |v_i|  +  round_weight_s * g_s(v)),   g_s(v) = sqrt(sum_i n_i v_i^2 / n_s)

(``v`` the per-entry mask values - SNL's coefficients, AutoReP's straight-through gates -
``n_i`` the ReLUs an entry covers, ``n_s`` the site's candidates). ``g_s`` is a group norm:
1 when the whole site is kept, ``sqrt(kept fraction)`` for a binary mask, 0 only when the
whole site is dropped; its gradient pushes a whole site towards zero, hardest where few
entries are left, so kept ReLUs concentrate in fewer sites. Normalised by the latency of
the start in the same units (``N + sum_s round_weight_s``), the penalty is a fraction of
the start's latency: the penalty weights mean the same at any size, as the ReLU-count
penalties (normalised by ``N``) do; without ``objective: latency`` nothing changes.

At the cut to exactly ``budget`` ReLUs, only sites that still have a live entry are
eligible (:func:`live_site_eligibility`), so a budget above the live count is not filled
with stray ReLUs that each open a site's rounds. A snapshot taken on the way down (SNL's
harvested budgets) or a search that ends with a few gates on in many sites still leaves
*stray sites*: a handful of ReLUs that pay a whole site's rounds. :func:`close_stray_sites`
closes, weakest first, every site that would hold less than ``stray_share`` of the budget
while its ReLUs are worth less than its rounds (kept < ``round_weight_s``), as long as the
other eligible entries can hold the budget; the freed ReLUs go to the next-best entries
of the sites that stay open.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from pi_opt.activations import Kind
from pi_opt.costmodel import CostCounts, relu_cost, square_cost
from pi_opt.techniques._common import top_within
from pi_opt.techniques._masks import GatedSite
from pi_opt.techniques.base import TechniqueConfig, TechniqueContext

class RoundAwareConfig(TechniqueConfig):
    """The round-aware fields of a technique with a per-site round term (SNL, AutoReP);
    both act only under ``objective: latency``."""

    #: scale of the per-site round term (0: the technique's own penalty only)
    round_weight: float = Field(1.0, ge=0)
    #: close sites that would hold < this share of the budget while their ReLUs are worth
    #: less than their rounds (:func:`close_stray_sites`; 0: off)
    stray_share: float = Field(0.25, ge=0, lt=1)


#: Added under the square root of the group norm so its gradient stays finite at 0.
_EPS = 1e-12


def site_round_weights(ctx: TechniqueContext, sites: list[GatedSite], *, drop_squares: bool,
                       scale: float = 1.0) -> list[float]:
    """Per-site round cost in ReLU equivalents (list aligned with ``sites``), times ``scale``.

    Empty when ``ctx.latency`` is None (objective ``relus``/``cost``), when ``scale`` is 0,
    or when the cost model prices a dropped ReLU at <= 0 s on the link (nothing to weigh
    rounds against). ``drop_squares``: dropped positions become degree-2 polynomials (one
    secure square each, 1 round per site, 8 bytes per element) instead of the identity.
    A site without candidates weighs 0.
    """
    if ctx.latency is None or scale == 0:
        return []
    model, net = ctx.latency.cost_model, ctx.latency.network
    relu = relu_cost(1)
    square = square_cost(1)
    saved_s = model.predict_network(CostCounts(relus=1.0, bytes=relu.bytes), net)
    if drop_squares:
        saved_s -= model.predict_network(CostCounts(poly_mults=1.0, bytes=square.bytes), net)
    if saved_s <= 0:
        return []
    round_s = model.predict_network(CostCounts(rounds=1.0), net)
    out = []
    for g in sites:
        if float(g.weight.sum()) == 0:
            out.append(0.0)
            continue
        squares = drop_squares or bool((g.orig == int(Kind.POLY)).any())
        extra = relu.rounds - (square.rounds if squares else 0)
        out.append(scale * extra * round_s / saved_s)
    return out


def round_penalty(values: list[Tensor], counts: list[Tensor], round_weights: list[float]
                  ) -> Tensor:
    """``sum_s round_weight_s * g_s(values_s)`` (module doc): the sites' rounds in ReLU
    equivalents, a scalar tensor. ``values``/``counts``: per site, the per-entry mask values
    and the ReLUs each entry covers (same shape); sites with weight 0 are skipped."""
    terms = []
    for v, n, w in zip(values, counts, round_weights):
        if w == 0:
            continue
        total = n.sum().clamp_min(1.0)
        terms.append(w * torch.sqrt((n * v.float() * v.float()).sum() / total + _EPS))
    if not terms:
        return torch.zeros((), device=values[0].device if values else None)
    return torch.stack(terms).sum()


def live_site_eligibility(sites: list[GatedSite], eligible: dict[str, Tensor],
                          live: list[bool]) -> dict[str, Tensor]:
    """``eligible`` restricted to the sites flagged ``live`` (when at least one is): the cut
    to the budget then never opens a site the search dropped."""
    if not any(live):
        return eligible
    return {g.name: eligible[g.name] if alive else torch.zeros_like(eligible[g.name])
            for g, alive in zip(sites, live)}


def _per_entry(g: GatedSite) -> int:
    """Per-sample elements one kinds entry of ``g`` covers (``H*W`` for a channel map)."""
    return int(g.site.full_kinds().numel() // g.orig.numel())


def _kept_per_site(sites: list[GatedSite], scores: dict[str, Tensor],
                   eligible: dict[str, Tensor], budget: int) -> list[int]:
    """ReLUs per site (aligned with ``sites``) that the exact top-``budget`` cut over the
    eligible entries would keep (:func:`~pi_opt.techniques._common.top_within`, the rule of
    ``keep_top``)."""
    flat, counts, owner = [], [], []
    for i, g in enumerate(sites):
        el = eligible[g.name].to(torch.bool).cpu().flatten()
        per = _per_entry(g)
        s = scores[g.name].detach().float().cpu().flatten()
        flat.append(s[el])
        counts.append(torch.full((int(el.sum()),), per, dtype=torch.long))
        owner.append(torch.full((int(el.sum()),), i, dtype=torch.long))
    if not flat:
        return []
    allcounts, allowner = torch.cat(counts), torch.cat(owner)
    keep = top_within(torch.cat(flat), allcounts, budget)
    kept = torch.zeros(len(sites), dtype=torch.long)
    kept.index_add_(0, allowner[keep], allcounts[keep])
    return [int(k) for k in kept]


def close_stray_sites(sites: list[GatedSite], scores: dict[str, Tensor],
                      eligible: dict[str, Tensor], budget: int, round_weights: list[float],
                      *, stray_share: float) -> dict[str, Tensor]:
    """``eligible`` without the stray sites of the cut to ``budget`` ReLUs (module doc).

    ``scores``/``eligible``: per site name, kinds-shaped (the cut's ranking and candidates);
    ``round_weights``: per site in ReLU equivalents (:func:`site_round_weights`; empty =
    objective not latency: ``eligible`` is returned unchanged, as with ``stray_share`` 0).
    A site is stray when the cut would keep ``0 < k < stray_share * budget`` ReLUs in it and
    ``k < round_weight``. Sites close one at a time, the one with the fewest kept first,
    and only while the remaining eligible entries cover ``budget`` ReLUs.
    """
    if not round_weights or stray_share <= 0 or budget <= 0:
        return eligible
    out = dict(eligible)
    while True:
        kept = _kept_per_site(sites, scores, out, budget)
        stray = [(k, i) for i, (k, w) in enumerate(zip(kept, round_weights))
                 if 0 < k < stray_share * budget and k < w]
        if not stray:
            return out
        _, i = min(stray)
        g = sites[i]
        others = sum(int(out[h.name].to(torch.bool).sum()) * _per_entry(h)
                     for h in sites if h is not g)
        if others < budget:
            return out
        out[g.name] = torch.zeros_like(out[g.name])


def latency_eligibility(sites: list[GatedSite], scores: dict[str, Tensor],
                        eligible: dict[str, Tensor], live: list[bool], budget: int,
                        round_weights: list[float], *, stray_share: float
                        ) -> dict[str, Tensor]:
    """The cut's candidates under ``objective: latency`` (``round_weights`` non-empty):
    only sites the search left ``live`` (:func:`live_site_eligibility`), stray sites
    closed (:func:`close_stray_sites`). Without round weights ``eligible`` is returned."""
    if not round_weights:
        return eligible
    return close_stray_sites(sites, scores, live_site_eligibility(sites, eligible, live),
                             budget, round_weights, stray_share=stray_share)


__all__ = ["RoundAwareConfig", "close_stray_sites", "latency_eligibility",
           "live_site_eligibility", "round_penalty", "site_round_weights"]
