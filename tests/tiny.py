"""Tiny shared setups for tests: a small digits subset and a 4/8/16-wide mini ResNet."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from pi_opt.artifacts import ArchSpec, ModelSpec
from pi_opt.data import DataBundle, DatasetSpec, load_dataset
from pi_opt.profile import profile_model
from pi_opt.sites import materialize_all, prepare_sites
from pi_opt.techniques import TechniqueContext
from pi_opt.training import TrainConfig, fit

TINY_WIDTHS = (4, 8, 16)


@lru_cache(maxsize=1)
def tiny_data() -> DataBundle:
    return load_dataset(DatasetSpec(kind="digits", max_train=400, seed=0))


def tiny_spec(data: DataBundle) -> ModelSpec:
    return ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": list(TINY_WIDTHS)}),
                     input_shape=data.input_shape, num_classes=data.num_classes,
                     class_names=data.class_names, mean=data.mean, std=data.std)


@lru_cache(maxsize=1)
def _teacher_state() -> dict[str, torch.Tensor]:
    data = tiny_data()
    torch.manual_seed(0)
    model = prepare_sites(tiny_spec(data).build())
    materialize_all(model, data.train.tensors[0][:1])
    fit(model, data.train, data.val, TrainConfig(epochs=4, lr=0.05, seed=0))
    return {k: v.clone() for k, v in model.state_dict().items()}


def tiny_teacher() -> torch.nn.Module:
    data = tiny_data()
    model = prepare_sites(tiny_spec(data).build())
    materialize_all(model, data.train.tensors[0][:1])
    model.load_state_dict(_teacher_state())
    return model.eval()


class PoisonedSplit(TensorDataset):
    """A split that fails loudly when read: techniques must never look at the test set."""

    def __init__(self) -> None:
        super().__init__(torch.zeros(1))

    @property  # type: ignore[override]
    def tensors(self):  # noqa: D401
        raise AssertionError("technique read the test split")

    @tensors.setter
    def tensors(self, value):  # noqa: D401
        pass


def tiny_context(workdir: Path, *, epochs: int = 1, poison_test: bool = True) -> TechniqueContext:
    data = tiny_data()
    if poison_test:
        data = dataclasses.replace(data, test=PoisonedSplit())
    teacher = tiny_teacher()
    spec = tiny_spec(data)
    return TechniqueContext(
        spec=spec, data=data, teacher=teacher,
        baseline_profile=profile_model(teacher, spec.input_shape),
        finetune=TrainConfig(epochs=epochs, lr=0.01, seed=0), workdir=workdir, seed=0)


#: A tiny digits search job shared by the search, search-efficiency and cost-model tests.
TINY_SEARCH = {
    "data": {"kind": "digits", "max_train": 300},
    "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
              "input_shape": [1, 8, 8], "num_classes": 10},
    "baseline": {"epochs": 2},
    "finetune": {"epochs": 1},
}
