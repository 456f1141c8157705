"""Techniques on a streamed image folder (decoded on access, never whole in memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.data import DatasetSpec, StreamingImages, load_dataset
from pi_opt.profile import profile_model
from pi_opt.sites import materialize_all, prepare_sites
from pi_opt.techniques import TechniqueContext, baseline_candidate, create_technique
from pi_opt.techniques._common import fairness_resample
from pi_opt.techniques.criticality import data_fingerprint
from pi_opt.training import TrainConfig, fit


def _folder(root: Path, *, classes: int = 3, per_class: int = 10, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            px = rng.integers(0, 60, (side, side, 3), dtype=np.uint8)
            px[..., c] += 180  # class = brightest channel: learnable
            Image.fromarray(px).save(root / f"c{c}" / f"{i}.png")
    return root


def test_technique_trial_on_a_streamed_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images")
    spec_data = DatasetSpec(kind="imagefolder", path=str(root), image_size=8, streaming="on")
    data = load_dataset(spec_data)
    assert isinstance(data.train, StreamingImages) and isinstance(data.val, StreamingImages)
    spec = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 8, 16]}),
                     input_shape=data.input_shape, num_classes=data.num_classes,
                     class_names=data.class_names, mean=data.mean, std=data.std)
    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=8, seed=0, data_workers=0)
    torch.manual_seed(0)
    teacher = prepare_sites(spec.build())
    materialize_all(teacher, data.train.tensors[0][:1])
    fit(teacher, data.train, data.val, cfg)
    ctx = TechniqueContext(spec=spec, data=data, teacher=teacher.eval(),
                           baseline_profile=profile_model(teacher, spec.input_shape),
                           finetune=cfg, workdir=tmp_path / "work", fairness_weight=1.0)

    # The criticality cache key comes from the files (no image decoded), and follows them.
    fp = data_fingerprint(data)
    assert fp == data_fingerprint(load_dataset(spec_data))
    changed = Path(data.train.paths[0])
    changed.write_bytes(changed.read_bytes() + b"\0")  # same pixels, one more byte
    assert data_fingerprint(load_dataset(spec_data)) != fp

    resampled = fairness_resample(ctx, teacher, data.train)  # stays streamed, same size
    assert isinstance(resampled, StreamingImages) and len(resampled) == len(data.train)

    budget = ctx.baseline_profile.relus // 5
    cand = create_technique("deepreduce", epochs=1, criticality_epochs=1).run(
        ctx, baseline_candidate(ctx), budget=budget)[0]
    assert 0 < cand.relus() <= budget and 0.0 <= cand.val_accuracy <= 1.0
