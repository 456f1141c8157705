"""``pi_opt.plan.plan_job`` / ``pi-opt plan`` and the paper presets in configs/.

The plan never reads data: the CIFAR/TinyImageNet presets plan with their data
paths missing (a warning), and every number it prints is either counted on the
real model or derived from the config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from pi_opt.errors import ConfigError
from pi_opt.plan import activation_bytes_per_sample, model_facts, plan_job
from pi_opt.search import SearchConfig

REPO = Path(__file__).resolve().parent.parent


def _config(name: str) -> SearchConfig:
    return SearchConfig.model_validate(yaml.safe_load((REPO / "configs" / name).read_text()))


def test_activation_bytes_counts_saved_tensors_not_weights() -> None:
    # conv saves its input (1x8x8) and ReLU its output (4x8x8): 320 floats per sample
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU())
    assert activation_bytes_per_sample(model, (1, 8, 8)) == 320 * 4


def test_digits_plan_counts_match_the_config() -> None:
    cfg = _config("digits_quick.yaml")
    plan = plan_job(cfg, measure_steps=0)
    assert plan.baseline_relus == 2304
    assert [b.relus for b in plan.budgets] == cfg.absolute_budgets(2304)
    assert all(abs(b.percent_of_baseline - 100 * b.relus / 2304) < 1e-9 for b in plan.budgets)
    assert plan.timing is None and plan.total_seconds is None
    assert plan.baseline.epochs == cfg.baseline.epochs
    train = plan.data.train_images
    assert train is not None and plan.baseline.images == cfg.baseline.epochs * train
    snl = next(c for c in plan.chains if c.chain == ["snl"])
    assert snl.trials == 1  # one descent (Technique.harvests) answers every budget
    # the descent is an upper bound; one fine-tune per budget the trial answers (harvest)
    search, ft = snl.phases
    assert search.bound and ft.epochs == cfg.finetune.epochs * len(plan.budgets)
    assert snl.total_epochs == snl.epochs_per_trial * snl.trials
    shared = sum(c.total_epochs for c in plan.chains)
    assert plan.total_epochs >= plan.baseline.epochs + shared
    assert plan.params > 0 and plan.macs > 0 and plan.activation_bytes_per_sample > 0
    hits = model_facts.cache_info().hits          # a second plan of the same network: cached
    assert plan_job(cfg, measure_steps=0) == plan
    assert model_facts.cache_info().hits == hits + 1
    assert plan.params == sum(p.numel() for p in cfg.model.build().parameters())


def test_plan_time_estimate_from_measured_steps() -> None:
    cfg = _config("digits_quick.yaml").model_copy(update={"techniques": []})
    cfg = SearchConfig.model_validate({**cfg.model_dump(), "techniques": ["autorep"]})
    plan = plan_job(cfg, measure_steps=1)
    assert plan.timing is not None and plan.timing.train_step_s > 0
    assert plan.total_seconds is not None and plan.total_seconds > 0
    kd = plan.chains[0].phases[0]
    # a KD epoch costs a teacher forward more than a plain epoch of as many images
    per_img = kd.seconds / kd.images
    assert per_img > 1 / plan.timing.train_images_per_s


def test_file_kind_without_model_needs_a_model() -> None:
    cfg = SearchConfig.model_validate({"data": {"kind": "imagefolder", "path": "/nonexistent"}})
    with pytest.raises(ConfigError, match="set 'model'"):
        plan_job(cfg, measure_steps=0)


def test_missing_data_path_is_a_warning() -> None:
    cfg = SearchConfig.model_validate({
        "data": {"kind": "cifar10", "path": "/nonexistent/cifar-10-batches-py"},
        "model": {"arch": {"name": "resnet", "kwargs": {"widths": [8, 16], "blocks": [1, 1]}},
                  "input_shape": [3, 32, 32], "num_classes": 10},
        "techniques": ["snl"], "budgets": [0.1]})
    plan = plan_job(cfg, measure_steps=0)
    assert plan.data.path_exists is False
    assert any("/nonexistent/cifar-10-batches-py" in w for w in plan.warnings)
    assert plan.data.train_images == 50_000 - 7_500 and plan.data.test_images == 10_000


def test_cli_plan_prints_and_fails_in_one_line(tmp_path: Path, capsys) -> None:
    from pi_opt_cli import main

    assert main(["plan", "--config", str(REPO / "configs/digits_quick.yaml"), "--steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "baseline ReLUs 2,304" in out and "budgets: 115 (4.99 %)" in out
    assert main(["plan", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml" in err


def test_measure_steps_must_be_non_negative() -> None:
    with pytest.raises(ConfigError):
        plan_job(_config("digits_quick.yaml"), measure_steps=-1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PRESETS = {  # file -> (baseline ReLUs, data kind)
    "cifar10_resnet18.yaml": (491_520, "cifar10"),
    "cifar100_resnet18.yaml": (491_520, "cifar100"),
    "cifar100_wrn22_8.yaml": (1_359_872, "cifar100"),
    "tinyimagenet_resnet18.yaml": (1_966_080, "tinyimagenet"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_paper_presets_validate_and_plan_without_data(name: str) -> None:
    relus, kind = PRESETS[name]
    cfg = _config(name)
    assert cfg.data.kind == kind and cfg.data.path and not Path(cfg.data.path).exists()
    for chain in cfg.techniques:  # every technique runs its published table
        for tech in chain.chain:
            assert chain.params[tech]["preset"] == "paper"
    plan = plan_job(cfg, measure_steps=0)
    assert plan.baseline_relus == relus  # the papers' convention: no stem ReLU
    assert plan.data.path_exists is False and any(cfg.data.path in w for w in plan.warnings)
    assert plan.data.train_images and plan.total_images
    assert all(b.relus == int(b.requested) for b in plan.budgets)


def test_cifar100_preset_has_the_issue_budgets() -> None:
    budgets = set(_config("cifar100_resnet18.yaml").budgets)
    assert {12_900, 25_000, 50_000, 100_000} <= budgets


def test_shapes_plan_uses_its_fixed_split_sizes() -> None:
    cfg = SearchConfig.model_validate({"data": {"kind": "shapes", "shapes_train": 300},
                                       "techniques": ["autorep"], "budgets": [0.1]})
    plan = plan_job(cfg, measure_steps=0)
    assert plan.input_shape == (3, 32, 32) and plan.data.train_images == 300
    assert plan.data.val_images == cfg.data.shapes_val
