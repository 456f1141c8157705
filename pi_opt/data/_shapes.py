"""``kind: shapes`` - a generated colour-image task that needs non-linear capacity.

Every image (``3 x S x S``, ``S = image_size`` or 32) shows one *main object* over a
cluttered, noisy background. The label is ``5 * texture + shape``:

* ``shape`` (5 values): disk, square, triangle (pointing up), plus, ring. The shapes are
  sized to similar ink areas so that "how much object" does not give the shape away.
* ``texture`` (2 values): solid, or striped (stripes of period ~``S / 9`` px at a random
  angle and phase, alternating the object colour and its opposite-contrast colour).

Nuisance factors, all independent of the label (that is what makes the task non-linear):

* position: centre uniform so that the object stays inside the image; radius
  ``S * [0.15, 0.24]``;
* **contrast polarity**: background colour uniform in ``[0.2, 0.8]^3``; the object colour is
  background ``+ s * m * (1 + j)`` with a random sign ``s`` (per image), a magnitude ``m``
  uniform in ``[0.25, 0.55]`` and a per-channel jitter ``j`` uniform in ``[-0.25, 0.25]``.
  Class-conditional pixel means are therefore equal up to sampling noise: a linear model on
  the pixels sees (almost) nothing, and any detector must combine evidence non-linearly
  (|edge|, texture energy, shape parts);
* background: a random linear colour gradient;
* clutter: ``3 .. 6`` small distractor squares (side ``S * [0.06, 0.12]``) of random colour
  drawn below the object, and one thin random line segment drawn over everything;
* pixel noise: gaussian, std ``NOISE_STD`` (0.03);
* **exposure gain** (version 2): last, the whole image's deviation from mid-grey is scaled by
  a per-image gain ``g`` log-uniform over ``GAIN_RANGE`` (0.25 .. 1, a 4x dynamic range):
  ``x = 0.5 + g * (x - 0.5)``, then clipped to [0, 1] and quantised to uint8. The noise is
  added before the gain, so every image has the same signal-to-noise ratio (the darkest
  contrast, 0.25 * 0.25, still spans ~16 grey levels against ~2 of noise).

Why the gain: random polarity alone is undone by squaring an edge or texture response, so
in version 1 (no gain, noise 0.06) a network whose every ReLU is a degree-2 polynomial kept
87.5 % test against 96.5 % for the all-ReLU one. A ReLU network is positively homogeneous
up to its biases (``relu(g z) = g relu(z)``), so one set of detectors serves every exposure.
A degree-2 polynomial ``a z^2 + b z + c`` mixes ``g^2`` and ``g`` terms, and ``L`` stacked
layers scale by up to ``g^(2^L)``: no fixed polynomial network serves both ends of the range
(measured numbers: BENCHMARKS.md, "Generated `shapes` set").

Determinism: split ``p`` (train / val / test) is generated in chunks of ``CHUNK`` samples;
chunk ``i`` draws from ``SeedSequence([seed, GENERATOR_VERSION, p, i])``. The same
``(seed, size, split size)`` always gives identical bytes, a larger split extends a smaller
one (same prefix) and the three splits never share samples' random streams. Labels are
balanced within each chunk (``i % 10`` shuffled). Everything is vectorised numpy over
``[chunk, S, S]`` arrays; results are cached per process (:func:`shapes_raw`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pi_opt.data._raw import RawData

#: Bumped whenever the generative rules change (part of the data fingerprint).
GENERATOR_VERSION = 2
#: Samples generated per random stream (bounds memory: ~[CHUNK, 3, S, S] float32).
CHUNK = 1024
SHAPE_NAMES = ("disk", "square", "triangle", "plus", "ring")
TEXTURE_NAMES = ("solid", "striped")
NUM_CLASSES = len(SHAPE_NAMES) * len(TEXTURE_NAMES)
CLASS_NAMES = [f"{t}_{s}" for t in TEXTURE_NAMES for s in SHAPE_NAMES]
#: Smallest image side on which the shapes (radius >= 0.15 * side) stay recognisable.
MIN_SIDE = 16
MAX_SIDE = 128
DEFAULT_SIDE = 32
NOISE_STD = 0.03
#: Per-image exposure gain (log-uniform) applied around mid-grey after the noise.
GAIN_RANGE = (0.25, 1.0)
#: Half-extent of each shape in units of its radius (keeps the object inside the image).
_EXTENT = np.array([1.0, 0.9, 1.56, 1.1, 1.1])
_SPLIT_TAGS = {"train": 0, "val": 1, "test": 2}


def _signed_distance(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (px, negative inside) of each pixel to the object outline.

    ``shape`` int ``[N]``, ``dx``/``dy`` ``[N, S, S]`` pixel offsets from the centre,
    ``r`` ``[N, 1, 1]`` radius. Returns float32 ``[N, S, S]``.
    """
    ax, ay = np.abs(dx), np.abs(dy)
    dist = np.sqrt(dx * dx + dy * dy)
    disk = dist - r
    square = np.maximum(ax, ay) - 0.886 * r  # same area as the disk
    # equilateral triangle pointing up (image y grows downward), same area as the disk:
    # centroid at the centre, base at +0.78 r, apex at -1.56 r
    tri = np.maximum(dy - 0.78 * r, 0.866 * ax - 0.5 * (dy + 1.56 * r))
    plus = np.maximum(np.minimum(ax, ay) - 0.42 * r, np.maximum(ax, ay) - 1.1 * r)
    ring = np.abs(dist - 0.78 * r) - 0.32 * r
    stack = np.stack([disk, square, tri, plus, ring])  # [5, N, S, S]
    return np.take_along_axis(stack, shape[None, :, None, None], axis=0)[0]


def _background(rng: np.random.Generator, n: int, side: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background colour ``[N, 3]`` and image ``[N, 3, S, S]`` with a linear colour gradient."""
    base = rng.uniform(0.2, 0.8, (n, 3))
    slope = rng.uniform(-0.15, 0.15, (n, 3, 2))
    u = grid / side - 0.5  # [2, S, S] in [-0.5, 0.5)
    img = base[:, :, None, None] + np.einsum("ncd,dhw->nchw", slope, u)
    return base, img


def _paint(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """In place: ``img = (1 - alpha) * img + alpha * color``; alpha ``[N, S, S]``, color ``[N, 3]``."""
    a = alpha[:, None]
    img *= 1.0 - a
    img += a * color[:, :, None, None]


def _clutter(rng: np.random.Generator, img: np.ndarray, grid: np.ndarray) -> None:
    """Distractor squares (3..6 per image, random colour) painted in place."""
    n, _, side, _ = img.shape
    count = rng.integers(3, 7, n)
    for k in range(6):
        half = rng.uniform(0.03, 0.06, n) * side
        cx, cy = rng.uniform(0, side, (2, n))
        inside = np.maximum(np.abs(grid[1] - cx[:, None, None]), np.abs(grid[0] - cy[:, None, None]))
        alpha = np.clip(half[:, None, None] + 0.5 - inside, 0.0, 1.0) * np.asarray(count > k)[:, None, None]
        _paint(img, alpha, rng.uniform(0.0, 1.0, (n, 3)))


def _line(rng: np.random.Generator, img: np.ndarray, grid: np.ndarray) -> None:
    """One thin random line segment (half-width ~0.6 px) per image, painted in place."""
    n, _, side, _ = img.shape
    p0 = rng.uniform(0, side, (n, 2))
    p1 = rng.uniform(0, side, (n, 2))
    d = p1 - p0
    gx, gy = grid[1][None], grid[0][None]
    t = ((gx - p0[:, 0, None, None]) * d[:, 0, None, None]
         + (gy - p0[:, 1, None, None]) * d[:, 1, None, None])
    t = np.clip(t / np.maximum((d * d).sum(1), 1e-6)[:, None, None], 0.0, 1.0)
    px = p0[:, 0, None, None] + t * d[:, 0, None, None] - gx
    py = p0[:, 1, None, None] + t * d[:, 1, None, None] - gy
    alpha = np.clip(1.1 - np.sqrt(px * px + py * py), 0.0, 1.0)
    _paint(img, alpha, rng.uniform(0.0, 1.0, (n, 3)))


def _exposure(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """``0.5 + g * (img - 0.5)`` with one gain ``g`` per image, log-uniform over ``GAIN_RANGE``.

    ``img`` float ``[N, 3, S, S]`` (values about [0, 1]); returns the same shape.
    """
    low, high = np.log(GAIN_RANGE)
    gain = np.exp(rng.uniform(low, high, len(img)))[:, None, None, None]
    return 0.5 + gain * (img - 0.5)


def _chunk(seed: int, split: int, index: int, n: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` samples of one chunk: uint8 ``[n, 3, S, S]`` and int64 labels ``[n]``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, GENERATOR_VERSION, split, index]))
    y = rng.permutation(np.arange(n, dtype=np.int64) % NUM_CLASSES)
    shape, striped = y % len(SHAPE_NAMES), y // len(SHAPE_NAMES)
    grid = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5  # [2 (y, x), S, S]
    bg, img = _background(rng, n, side, grid)
    _clutter(rng, img, grid)

    r = rng.uniform(0.15, 0.24, n) * side
    margin = _EXTENT[shape] * r + 1.0
    cx = rng.uniform(margin, side - margin)
    cy = rng.uniform(margin, side - margin)
    dx = grid[1][None] - cx[:, None, None]
    dy = grid[0][None] - cy[:, None, None]
    alpha = np.clip(0.5 - _signed_distance(shape, dx, dy, r[:, None, None]), 0.0, 1.0)

    polarity = rng.choice([-1.0, 1.0], n)[:, None]
    delta = polarity * rng.uniform(0.25, 0.55, (n, 1)) * (1.0 + rng.uniform(-0.25, 0.25, (n, 3)))
    color = np.clip(bg + delta, 0.0, 1.0)
    period = rng.uniform(0.09, 0.13, n)[:, None, None] * side
    angle = rng.uniform(0.0, np.pi, n)[:, None, None]
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    wave = np.sin(2 * np.pi * (dx * np.cos(angle) + dy * np.sin(angle)) / period + phase)
    stripe = np.clip(0.5 + 1.5 * wave, 0.0, 1.0)  # soft 0/1 bands
    on = np.where(striped[:, None, None] == 1, stripe, 1.0)
    _paint(img, alpha * on, color)
    _paint(img, alpha * (1.0 - on), np.clip(bg - 0.6 * delta, 0.0, 1.0))
    _line(rng, img, grid)

    img += NOISE_STD * rng.standard_normal(img.shape)
    x = np.clip(np.rint(_exposure(rng, img) * 255.0), 0, 255).astype(np.uint8)
    return x, y


def generate_split(seed: int, split: str, samples: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One split: uint8 ``x`` ``[samples, 3, side, side]`` and int64 ``y`` ``[samples]``.

    ``split`` is ``"train"``, ``"val"`` or ``"test"``. Raises ``ValueError`` for an unknown
    split, ``samples < 1`` or a side outside ``[MIN_SIDE, MAX_SIDE]`` (the spec validates
    these earlier with a clearer message).
    """
    if split not in _SPLIT_TAGS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_TAGS)}")
    if samples < 1 or not MIN_SIDE <= side <= MAX_SIDE:
        raise ValueError(f"need samples >= 1 and {MIN_SIDE} <= side <= {MAX_SIDE}")
    xs, ys = [], []
    for index, start in enumerate(range(0, samples, CHUNK)):
        x, y = _chunk(seed, _SPLIT_TAGS[split], index, min(CHUNK, samples - start), side)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@lru_cache(maxsize=4)
def shapes_raw(seed: int, train: int, val: int, test: int, side: int) -> RawData:
    """The three splits as :class:`RawData` (cached per process: callers must not
    modify the arrays; :func:`~pi_opt.data.load_dataset` copies them).

    ``x``/``y`` = train, ``x_val``/``y_val`` = validation, ``x_test``/``y_test`` = test.
    """
    parts = {}
    for split, n in (("train", train), ("val", val), ("test", test)):
        parts[split] = generate_split(seed, split, n, side)
    return RawData(
        name="shapes",
        x=parts["train"][0],
        y=parts["train"][1],
        class_names=list(CLASS_NAMES),
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        x_val=parts["val"][0],
        y_val=parts["val"][1],
        presized=True,
    )
