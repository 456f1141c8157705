"""DaPa: distribution-aware polynomial approximation of ReLU (AutoReP, ICCV'23).

For a channel whose pre-activation ``x ~ N(mu, sigma^2)``, the polynomial ``p``
minimizing ``E[(relu(x) - p(x))^2]`` has a closed form. With ``z = mu / sigma``,
``phi = pdf(z)`` and ``Phi = cdf(z)`` of the standard normal:

* degree 2: ``a2 = phi / (2 sigma)``, ``a1 = Phi - z phi``, ``a0 = sigma phi (1 + z^2) / 2``;
* degree 1: ``a1 = Phi``, ``a0 = sigma phi`` (``a2 = 0``).

``sigma`` is the standard deviation (the public AutoReP code passes the variance).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def dapa_coefficients(
    mean: Tensor, std: Tensor, degree: int = 2, *, min_std: float = 1e-6
) -> Tensor:
    """Least-squares ReLU fit ``[C, 3]`` = (a0, a1, a2) for ``x ~ N(mean[c], std[c]^2)``.

    ``mean``/``std``: ``[C]`` (any float dtype/device; computed in float64, returned as
    ``mean.dtype`` when floating, else float32). ``std`` is clamped to ``min_std``.
    """
    if degree not in (1, 2):
        raise ValueError(f"DaPa supports degree 1 or 2, got {degree}")
    out_dtype = mean.dtype if mean.is_floating_point() else torch.float32
    mu = mean.detach().to(torch.float64)
    sigma = std.detach().to(torch.float64, copy=True).to(mu.device).clamp_min(min_std)
    mu, sigma = torch.broadcast_tensors(mu, sigma)
    z = mu / sigma
    phi = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
    cdf = torch.special.ndtr(z)
    if degree == 2:
        a2 = phi / (2.0 * sigma)
        a1 = cdf - z * phi
        a0 = 0.5 * sigma * phi * (1.0 + z * z)
    else:
        a2 = torch.zeros_like(mu)
        a1 = cdf
        a0 = sigma * phi
    return torch.stack([a0, a1, a2], dim=-1).to(out_dtype)


def eval_poly(coeffs: Tensor, x: Tensor) -> Tensor:
    """Evaluate per-channel polynomials ``coeffs [C, 3]`` on ``x [B, C, ...]`` (Horner)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    c = coeffs.to(x.dtype)
    return c[:, 0].view(shape) + x * (c[:, 1].view(shape) + x * c[:, 2].view(shape))


__all__ = ["dapa_coefficients", "eval_poly"]
