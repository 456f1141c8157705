"""Circa's truncated sign test on CrypTen arithmetic shares (2 parties).

The bit computed for each element is exactly
``pi_opt.circa_faults.truncated_sign_bits(s0, s1, k, l)`` of the parties' int64 shares
``s0 + s1 = x * 2**16``:

1. each party keeps bits ``[k, k + l)`` of its *own* share (local);
2. it packs ``64 // l`` such l-bit lanes into each int64 word (local);
3. the packed words are XOR-shared (``BinarySharedTensor(w, src=party)``: local PRZS);
4. a lane-segmented Kogge-Stone carry prefix adds the two l-bit numbers modulo
   ``2**l``: 1 AND round for generate/propagate plus ``ceil(log2(l - 1))`` rounds;
   shifts are masked per lane so carries never cross lanes;
5. bit ``l - 1`` of each lane is the sign (local unpack);
6. B2A of the sign bits with the masked bits *packed* 64 per word before opening
   (1 round, 1/8 byte per element instead of 8);
7. ``relu = x * (1 - bit)``: one Beaver multiplication (1 round, exact: the bit
   has scale 1).

Rounds: ``3 + ceil(log2(l - 1))`` (7 for l = 16, 6 for l = 8; CrypTen's ReLU: 9), as
:func:`pi_opt.circa_faults.circa_rounds` (re-exported here as ``rounds``) computes them.
CrypTen bytes per element (send + receive, as CrypTen counts them):
``(2 + 4 * ceil(log2(l - 1))) * 16 / lanes + 0.25 + 32``.
Functions here must run inside a party process (crypten initialized).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pi_opt.circa_faults import carry_levels
from pi_opt.circa_faults import circa_rounds as rounds

_MASK64 = (1 << 64) - 1


def _to_int64(v: int) -> int:
    """Python int (two's complement, 64 bits) -> signed int64 value."""
    v &= _MASK64
    return v - (1 << 64) if v >= (1 << 63) else v


def lanes_per_word(l: int) -> int:
    """Number of ``l``-bit lanes packed into one 64-bit word (``64 // l``)."""
    return 64 // l


def crypten_bytes_per_element(l: int) -> float:
    """CrypTen-counted bytes (both directions) per element of one truncated-sign ReLU."""
    m = lanes_per_word(l)
    return (2 + 4 * carry_levels(l)) * 16.0 / m + 16.0 / 64 + 32.0


def _lane_masks(l: int) -> tuple[int, dict[int, int]]:
    """(lanes, {shift d: mask of in-lane bit positions >= d}) as int64 values."""
    m = lanes_per_word(l)
    lane = (1 << l) - 1
    keep: dict[int, int] = {}
    d = 1
    while d < l - 1:
        keep[d] = _to_int64(sum((lane ^ ((1 << d) - 1)) << (j * l) for j in range(m)))
        d *= 2
    return m, keep


def truncate_share(share: Tensor, k: int, l: int) -> Tensor:
    """Bits ``[k, k + l)`` of an int64 share as values in ``[0, 2**l)`` (``l = 64``: all)."""
    if l == 64:
        return share >> k
    return (share >> k) & ((1 << l) - 1)


def pack_lanes(t: Tensor, l: int) -> Tensor:
    """Pack values ``[n]`` in ``[0, 2**l)`` into ``ceil(n / lanes)`` int64 words."""
    m = lanes_per_word(l)
    if m == 1:
        return t
    n = t.numel()
    words = -(-n // m)
    padded = torch.zeros(words * m, dtype=torch.int64, device=t.device)
    padded[:n] = t
    padded = padded.view(words, m)
    out = torch.zeros(words, dtype=torch.int64, device=t.device)
    for j in range(m):
        out |= padded[:, j] << (j * l)
    return out


def unpack_sign_bits(words: Tensor, l: int, n: int) -> Tensor:
    """Bit ``l - 1`` of every lane of ``words`` in element order, ``[n]`` values in {0, 1}."""
    m = lanes_per_word(l)
    cols = [(words >> (j * l + l - 1)) & 1 for j in range(m)]
    return torch.stack(cols, dim=1).reshape(-1)[:n]


def pack_bits(bits: Tensor) -> Tensor:
    """Pack ``[n]`` values in {0, 1} into ``ceil(n / 64)`` int64 words (bit j of word i)."""
    n = bits.numel()
    words = -(-n // 64)
    padded = torch.zeros(words * 64, dtype=torch.int64, device=bits.device)
    padded[:n] = bits & 1
    shifts = torch.arange(64, dtype=torch.int64, device=bits.device)
    return (padded.view(words, 64) << shifts).sum(dim=1)  # disjoint bits: sum == OR


def unpack_bits(words: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits of ``words``, ``[n]`` values in {0, 1}."""
    shifts = torch.arange(64, dtype=torch.int64, device=words.device)
    return ((words.view(-1, 1) >> shifts) & 1).reshape(-1)[:n]


def _raw(t: Any) -> Tensor:
    """The plain torch tensor behind a share (unwraps CrypTen's CUDALongTensor)."""
    return t if torch.is_tensor(t) else t.tensor()


def _like(template: Any, t: Tensor) -> Any:
    """Wrap ``t`` the way ``template`` is wrapped (CUDALongTensor on GPU)."""
    if torch.is_tensor(template):
        return t
    from crypten.cuda import CUDALongTensor

    return CUDALongTensor(t)


def _b2a_packed(bits: Any) -> Any:
    """XOR-shared bits (``BinarySharedTensor``, values in {0, 1}) -> arithmetic shares.

    Like CrypTen's ``B2A_single_bit`` (open ``bit ^ r`` for a random shared bit r,
    then ``[r] * (1 - 2z) + z``), but the opened bits are packed 64 per word.
    """
    import crypten
    import crypten.communicator as comm

    provider = crypten.mpc.get_default_provider()
    r_arith, r_bin = provider.B2A_rng(bits.size(), device=bits.device)
    masked = _raw((bits ^ r_bin).share).reshape(-1) & 1  # own share of bit ^ r, bit 0 only
    n = masked.numel()
    opened = comm.get().all_reduce(pack_bits(masked), op=torch.distributed.ReduceOp.BXOR)
    z = unpack_bits(_raw(opened), n).view(bits.size())
    return r_arith * (1 - 2 * z) + z


def truncated_ltz(x: Any, k: int, l: int) -> Any:
    """``MPCTensor`` of bits (scale 1): ``truncated_sign_bits(s0, s1, k, l)`` of ``x``'s shares."""
    import crypten.communicator as comm
    from crypten.encoder import FixedPointEncoder
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import BinarySharedTensor
    from crypten.mpc.ptype import ptype

    if comm.get().get_world_size() != 2:
        raise RuntimeError("the truncated sign protocol is written for 2 parties")
    if not (0 <= k and 2 <= l and k + l <= 64):
        raise ValueError(f"invalid truncation k={k}, l={l}")
    shape = x.size()
    share = _raw(x.share).reshape(-1)
    n = share.numel()
    m, keep = _lane_masks(l)
    words = pack_lanes(truncate_share(share, k, l), l)
    a = BinarySharedTensor(words, src=0)  # party 0's truncated share, XOR-shared
    b = BinarySharedTensor(words, src=1)  # party 1's
    gen = a & b                            # 1 AND round
    prop = a ^ b
    prop0 = prop.clone()
    d = 1
    while d < l - 1:                       # ceil(log2(l - 1)) AND rounds
        gs = (gen << d) & keep[d]
        ps = (prop << d) & keep[d]
        upd = BinarySharedTensor.stack([prop, prop]) & BinarySharedTensor.stack([gs, ps])
        gen = gen ^ upd[0]
        prop = upd[1]
        d *= 2
    total = prop0 ^ (gen << 1)             # sum bits; the carry into lane bit 0 is never read
    sign = total.shallow_copy()
    raw = _raw(total.share)
    sign.share = _like(total.share, unpack_sign_bits(raw, l, n) if m > 1 else (raw >> 63) & 1)
    bit = _b2a_packed(sign)
    bit.encoder = FixedPointEncoder(precision_bits=0)
    out = MPCTensor([])
    out._tensor = bit
    out.ptype = ptype.arithmetic
    return out.view(shape)


def truncated_relu(x: Any, k: int, l: int) -> Any:
    """Circa ReLU ``x * (1 - neg)`` with the truncated sign test (``MPCTensor`` in and out)."""
    return x * (1 - truncated_ltz(x, k, l))


__all__ = [
    "carry_levels", "crypten_bytes_per_element", "lanes_per_word", "pack_bits", "pack_lanes",
    "rounds", "truncate_share", "truncated_ltz", "truncated_relu", "unpack_bits",
    "unpack_sign_bits",
]
