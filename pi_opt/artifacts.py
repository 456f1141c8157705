"""Model artifacts: architecture spec + recipe (JSON) + weights (safetensors).

A reduced model is stored as a directory::

    model.json          ArtifactManifest: spec, recipe (per-site shapes), counts, metrics
    weights.safetensors  every parameter and buffer, MixedActivation kinds/poly/circa included

and rebuilt by ``create_model(spec) -> prepare_sites -> materialize(recipe) ->
load_state_dict(strict)``, which reproduces the saved model bit for bit. User
bytes are never unpickled: pickle and ``torch.save`` archives are refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pi_opt.errors import ModelFormatError, PiOptError, ShapeMismatchError, UnsafeFormatError
from pi_opt.models import create_model
from pi_opt.profile import ModelProfile, profile_model
from pi_opt.sites import iter_sites, prepare_sites

MANIFEST = "model.json"
WEIGHTS = "weights.safetensors"
FORMAT: Final = "pi-opt-model"


class ArchSpec(BaseModel):
    """Registry name + keyword arguments of an architecture."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """What is needed to rebuild the plain network (also the upload contract)."""

    model_config = ConfigDict(extra="forbid")
    arch: ArchSpec
    input_shape: tuple[int, int, int]
    num_classes: int = Field(ge=2)
    class_names: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def build(self) -> nn.Module:
        """A fresh (untrained, all-ReLU) model of this architecture, channels and classes.

        Raises UnknownNameError / ConfigError for an unknown architecture or bad options.
        """
        kwargs = dict(self.arch.kwargs)
        kwargs.setdefault("in_channels", self.input_shape[0])
        kwargs.setdefault("num_classes", self.num_classes)
        return create_model(self.arch.name, **kwargs)


class SiteRecipe(BaseModel):
    """Layout of one activation site: input ``shape`` ``(C, H, W)``, mask granularity, and
    whether it carries polynomial coefficients.
    """

    model_config = ConfigDict(extra="forbid")
    shape: tuple[int, int, int]
    granularity: Literal["element", "channel"] = "element"
    poly: bool = False


class Recipe(BaseModel):
    """How the plain network was reduced: per-site layout plus the technique history."""

    model_config = ConfigDict(extra="forbid")
    sites: dict[str, SiteRecipe] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)


class ArtifactManifest(BaseModel):
    """``manifest.json`` of a saved model: spec, recipe, profile, metrics and the SHA-256
    (hex) of the weights file.
    """

    model_config = ConfigDict(extra="forbid")
    format: Literal["pi-opt-model"] = FORMAT
    schema_version: Literal[1] = 1
    spec: ModelSpec
    recipe: Recipe
    profile: ModelProfile
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str


@dataclass
class Artifact:
    """A loaded model (eval mode, sites restored) with its manifest."""

    model: nn.Module
    manifest: ArtifactManifest


def _refuse_pickle(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(9)
    # A safetensors file is an 8-byte little-endian header length, then the JSON header;
    # its first byte may be 0x80 (header length = 128 mod 256), which is not a pickle.
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise UnsafeFormatError(
            f"{path.name}: pickle / torch.save files are refused because loading them can run "
            "code; export weights with safetensors.torch.save_file(model.state_dict(), path)",
            file=str(path),
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; pickles and corrupt files raise ModelFormatError subclasses."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"weights file not found: {path}")
    _refuse_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{path.name}: not a valid safetensors file ({exc})") from exc


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict(strict=True)`` with clear errors for missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelFormatError(
            f"weights do not match the architecture: missing {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}",
            missing=missing, unexpected=unexpected,
        )
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        k, got, want = bad[0]
        raise ShapeMismatchError(
            f"shape mismatch for {k}: file has {got}, architecture expects {want}"
            f" ({len(bad)} mismatched tensors)", mismatched=[b[0] for b in bad],
        )
    model.load_state_dict(state, strict=True)


def check_input_shape(model: nn.Module, spec: ModelSpec) -> None:
    """Run one sample of ``spec.input_shape`` through the model; mismatch -> ShapeMismatchError."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *spec.input_shape))
    except RuntimeError as exc:
        raise ShapeMismatchError(
            f"input shape {spec.input_shape} does not fit architecture {spec.arch.name!r}: {exc}"
        ) from exc
    finally:
        model.train(was)
    if tuple(out.shape) != (1, spec.num_classes):
        raise ShapeMismatchError(
            f"model outputs {tuple(out.shape[1:])}, expected ({spec.num_classes},) logits")


def build_plain_model(spec: ModelSpec, weights: str | Path | None = None) -> nn.Module:
    """Bring-your-own model: build ``spec`` and (optionally) load plain safetensors weights.

    Raises ModelFormatError for unreadable or mismatched weights, ShapeMismatchError when
    one sample of ``spec.input_shape`` does not run through the model.
    """
    model = spec.build()
    if weights is not None:
        load_state_strict(model, read_safetensors(weights))
    check_input_shape(model, spec)
    return model


def recipe_of(model: nn.Module, history: list[dict[str, Any]] | None = None) -> Recipe:
    """The per-site layout of a prepared model plus ``history``.

    Raises ModelFormatError when a site has no recorded input shape (no forward pass yet).
    """
    sites = {}
    for name, site in iter_sites(model):
        if site.input_shape is None:
            raise ModelFormatError(f"site {name} has no recorded shape; run a forward pass first")
        sites[name] = SiteRecipe(shape=site.input_shape, granularity=site.granularity,
                                 poly=site.poly.numel() > 0)
    return Recipe(sites=sites, history=list(history or []))


def save_artifact(
    model: nn.Module,
    spec: ModelSpec,
    directory: str | Path,
    *,
    history: list[dict[str, Any]] | None = None,
    metrics: dict[str, Any] | None = None,
) -> ArtifactManifest:
    """Write ``model.json`` + ``weights.safetensors`` atomically into ``directory``.

    ``model`` is a prepared model that has seen one forward pass (site shapes known);
    unmaterialized sites are materialized in place. The manifest's profile counts are per
    sample at ``spec.input_shape``. Raises ModelFormatError when a site shape is unknown.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for _, site in iter_sites(model):
        if not site.materialized:
            if site.input_shape is None:
                raise ModelFormatError("run a forward pass before saving (site shapes unknown)")
            site.materialize(site.input_shape)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".safetensors.tmp")
    os.close(fd)
    save_file(state, tmp, metadata={"format": FORMAT})
    manifest = ArtifactManifest(
        spec=spec,
        recipe=recipe_of(model, history),
        profile=profile_model(model, spec.input_shape),
        metrics=dict(metrics or {}),
        weights_sha256=_sha256(Path(tmp)),
    )
    os.replace(tmp, directory / WEIGHTS)
    tmpj = directory / (MANIFEST + ".tmp")
    tmpj.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmpj, directory / MANIFEST)
    return manifest


def read_manifest(path: str | Path) -> ArtifactManifest:
    """Read and validate the manifest of an artifact folder (or of a manifest file).

    Raises ModelFormatError when the file is missing or invalid.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        return ArtifactManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise ModelFormatError(f"artifact manifest not found: {path}") from exc
    except ValidationError as exc:
        raise ModelFormatError(f"{path.name}: invalid artifact manifest: {exc}") from exc


def load_artifact(directory: str | Path, *, verify_hash: bool = True) -> Artifact:
    """Rebuild a saved artifact exactly (eval mode): architecture, site kinds, weights.

    ``directory`` holds ``model.json`` and ``weights.safetensors``; with ``verify_hash``
    the weights' SHA-256 must match the manifest. Raises ModelFormatError for a missing or
    invalid manifest, a checksum mismatch, sites that do not match the architecture or
    missing / unexpected / mis-shaped weights (UnsafeFormatError for a pickle).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS
    if verify_hash and weights.is_file() and _sha256(weights) != manifest.weights_sha256:
        raise ModelFormatError(f"{weights}: checksum does not match model.json (corrupt?)")
    try:
        model = prepare_sites(manifest.spec.build())
    except PiOptError:
        raise
    sites = dict(iter_sites(model))
    if set(sites) != set(manifest.recipe.sites):
        raise ModelFormatError(
            "recipe sites do not match the architecture's ReLU sites: "
            f"{sorted(set(sites) ^ set(manifest.recipe.sites))[:8]}")
    for name, rec in manifest.recipe.sites.items():
        site = sites[name]
        site.materialize(rec.shape, rec.granularity)
        if rec.poly:
            site.poly = torch.zeros(rec.shape[0], 3)
    load_state_strict(model, read_safetensors(weights))
    model.eval()
    return Artifact(model=model, manifest=manifest)


def describe(manifest: ArtifactManifest) -> dict[str, Any]:
    """Short JSON-able summary (counts + metrics) for CLIs and APIs."""
    p = manifest.profile
    return {"arch": manifest.spec.arch.model_dump(), "relus": p.relus, "poly_mults": p.poly_mults,
            "circa_relus": p.circa_relus, "macs": p.macs, **manifest.metrics}
