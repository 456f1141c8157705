"""Circa fault model: the stochastic ReLU's sign test on truncated additive shares.

(Not to be confused with :mod:`pi_opt.techniques.circa`, the technique that applies
it to a network and picks ``k``/``l``, or :mod:`mpc.circa_sign`, the 2PC protocol.)

This module is the single definition of the fault model. The plaintext
simulation below and the MPC backend (``mpc``) call the same bit-level
function :func:`truncated_sign_bits`, so accuracy measured in plaintext reflects
the fault rate of the encrypted execution.

Fixed point: values are encoded as ``int64(x * 2**frac_bits)`` (CrypTen's
encoder, truncation toward zero). Two parties hold shares ``s0 + s1 = x_enc``
(mod 2**64). Each party locally keeps bits ``[k, k + l)`` of its own share; the
parties add those l-bit numbers modulo 2**l and take bit ``l - 1`` as "x < 0".
Exact for ``-2**(k+l-1) + 2**k <= x_enc < 2**(k+l-1)`` except that ``0 <= x_enc < 2**k``
may be reported negative (the lost carry), so small positives are zeroed
("PosZero"); negatives are never passed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FRAC_BITS = 16


def encode_fixed(x: Tensor, frac_bits: int = FRAC_BITS) -> Tensor:
    """Float tensor -> int64 fixed point, truncating toward zero (as CrypTen does)."""
    return (x * float(2**frac_bits)).long()


def truncated_sign_bits(s0: Tensor, s1: Tensor, k: int, l: int) -> Tensor:
    """Sign bit (1 = negative) of the sum of two int64 shares after each party drops
    the k low bits of its share and keeps the next l bits. Shapes: any, equal; int64."""
    if not (0 <= k and 2 <= l and k + l <= 64):
        raise ValueError(f"invalid truncation k={k}, l={l}: need k >= 0, l >= 2, k + l <= 64")
    if l == 64:
        total = (s0 >> k) + (s1 >> k)
        return (total >> 63) & 1
    mask = (1 << l) - 1
    t0 = (s0 >> k) & mask
    t1 = (s1 >> k) & mask
    return ((t0 + t1) >> (l - 1)) & 1


def random_shares(x_enc: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Split int64 values into two uniformly random additive shares (mod 2**64)."""
    r = torch.randint(
        -(2**63), 2**63 - 1, x_enc.shape, dtype=torch.int64, generator=generator,
        device=x_enc.device,
    )
    return x_enc + r, -r  # int64 arithmetic wraps modulo 2**64


def circa_negative_mask(
    x: Tensor, k: int, l: int, *, frac_bits: int = FRAC_BITS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Simulated stochastic "x < 0" test of the MPC protocol; bool tensor like ``x``."""
    s0, s1 = random_shares(encode_fixed(x.detach(), frac_bits), generator)
    return truncated_sign_bits(s0, s1, k, l).bool()


def circa_relu(
    x: Tensor, k: int, l: int, *, frac_bits: int = FRAC_BITS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Plaintext simulation of the truncated-sign ReLU ``x * (1 - neg(x))``.

    Gradient: straight-through like ReLU (``1 - neg`` as the local derivative).
    """
    neg = circa_negative_mask(x, k, l, frac_bits=frac_bits, generator=generator)
    return x * (~neg).to(x.dtype)


def exact_range(k: int, l: int, frac_bits: int = FRAC_BITS) -> float:
    """Bound (float units) of the exact range: the test is exact for
    ``-2**(k+l-1) + 2**k <= x_enc < 2**(k+l-1)`` outside the PosZero band; values at the
    negative edge (within ``2**k`` of ``-2**(k+l-1)``) may wrap to positive."""
    return 2.0 ** (k + l - 1 - frac_bits)


def fault_band(k: int, frac_bits: int = FRAC_BITS) -> float:
    """Positive values below this (float units) may be zeroed."""
    return 2.0 ** (k - frac_bits)


def carry_levels(l: int) -> int:
    """Kogge-Stone levels after the first AND of the MPC sign test: ``ceil(log2(l - 1))``
    (0 for l = 2)."""
    return 0 if l <= 2 else math.ceil(math.log2(l - 1))


def circa_rounds(l: int) -> int:
    """Communication rounds of one truncated-sign ReLU layer keeping ``l`` bits:
    1 AND for generate/propagate + :func:`carry_levels` + 1 packed B2A + 1 multiplication,
    i.e. ``3 + ceil(log2(l - 1))`` (7 for l = 16; CrypTen's exact ReLU takes 9)."""
    return 3 + carry_levels(l)
