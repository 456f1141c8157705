"""Training engine: precision / channels_last / compile fallbacks, sync cadence,
per-epoch checkpoints and resume, TinyImageNet layout, streamed image folders."""

from __future__ import annotations

import gc
import tracemalloc
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pi_opt.data import DatasetSpec, PixelSplit, StreamingImages, load_dataset
from pi_opt.data import _images
from pi_opt.errors import Cancelled, DatasetError
from pi_opt.training import TrainConfig, TrainHooks, evaluate, fit
from pi_opt.training import _precision
from pi_opt.training._batches import (
    Generators, ResidentBatches, StreamingBatches, normalize_pixels, quantize,
)


def _data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _cfg(**kw: object) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "lr": 0.05, "seed": 0, "device": "cpu"}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _params(m: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in m.state_dict().values()])


# ----------------------------------------------------------------- precision & co


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(precision: str) -> None:
    m = _model()
    res = fit(m, _data(), _data(30, 1), _cfg(precision=precision, epochs=3))
    assert all(np.isfinite(h["loss"]) for h in res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert next(m.parameters()).dtype == torch.float32  # autocast, weights stay fp32


def test_bf16_unsupported_falls_back_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_precision, "bf16_supported", lambda dev: False)
    with pytest.warns(RuntimeWarning, match="bf16 is not supported"):
        res = fit(m := _model(), _data(), None, _cfg(precision="bf16"))
    ref = _model()
    fit(ref, _data(), None, _cfg())
    assert res.epochs_run == 2 and torch.equal(_params(m), _params(ref))


def test_channels_last_on_cpu_is_ignored_with_warning() -> None:
    with pytest.warns(RuntimeWarning, match="channels_last is ignored"):
        fit(m := _model(), _data(), None, _cfg(channels_last=True))
    fit(ref := _model(), _data(), None, _cfg())
    assert torch.equal(_params(m), _params(ref))


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: nn.Module) -> object:
        def run(x: torch.Tensor) -> torch.Tensor:
            model(x)  # touches BatchNorm statistics before failing, like a half-run graph
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        fit(m := _model(), _data(), None, _cfg(compile=True))
    fit(ref := _model(), _data(), None, _cfg())
    assert torch.equal(_params(m), _params(ref))  # the failed step left no trace


def test_sync_hooks_run_every_n_steps_and_step_hooks_every_step() -> None:
    synced: list[int] = []
    stepped: list[int] = []
    hooks = TrainHooks(on_sync=lambda m, s: synced.append(s),
                       on_step=lambda m, s: stepped.append(s))
    fit(_model(), _data(), None, _cfg(sync_every=4), hooks=hooks)  # 2 epochs x 6 steps
    assert stepped == list(range(12)) and synced == [0, 4, 8]


def test_pixel_split_quantizes_exactly() -> None:
    u8 = torch.randint(0, 256, (20, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = u8.float().div(255.0)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    q = quantize(x, mean, std)
    assert torch.equal(q, u8)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    assert torch.equal(normalize_pixels(q, m, s), x)
    # On CPU a resident split stays float (no per-batch de-quantization cost).
    b = ResidentBatches(PixelSplit(x, torch.zeros(20, dtype=torch.long), mean=mean, std=std),
                        torch.device("cpu"), 8, "auto")
    assert b.x.dtype == torch.float32 and b.norm is None


# ----------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("select_on_val", [True, False])
def test_checkpoint_resume_matches_uninterrupted(tmp_path: Path, select_on_val: bool) -> None:
    cfg = _cfg(epochs=4, select_on_val=select_on_val)
    train, val = _data(), _data(30, 1)
    full = fit(ref := _model(), train, val, cfg)

    epochs_seen: list[int] = []

    def killed_in_epoch_three() -> bool:  # the worker dies after epoch 2's checkpoint
        if epochs_seen[-1:] == [2]:
            raise Cancelled("worker killed")
        return False

    ck = tmp_path / "trial"
    with pytest.raises(Cancelled):
        fit(_model(), train, val, cfg, checkpoint=ck, should_stop=killed_in_epoch_three,
            progress=lambda ev: epochs_seen.append(ev["epoch"]))
    assert (ck / "train_state.pt").is_file()
    resumed = fit(m := _model(), train, val, cfg, checkpoint=ck,
                  hooks=TrainHooks(on_epoch_end=lambda mm, e, a: epochs_seen.append(e)))
    assert epochs_seen == [1, 2, 3, 4]  # epochs 1-2 were not trained again
    assert resumed.resumed_epochs == 2 and resumed.epochs_run == 4
    assert resumed.history == full.history
    assert resumed.best_val_accuracy == full.best_val_accuracy
    assert torch.equal(_params(m), _params(ref))


def test_checkpoint_keeps_hook_state_and_an_early_stop(tmp_path: Path) -> None:
    counter = {"n": 0}

    def on_epoch_end(model: nn.Module, epoch: int, acc: float) -> bool:
        counter["n"] += 10
        return epoch == 3  # the hook ends the 5-epoch run after epoch 3

    hooks = TrainHooks(on_epoch_end=on_epoch_end, save_state=lambda: dict(counter),
                       load_state=counter.update)
    first = fit(ref := _model(), _data(), None, _cfg(epochs=5), checkpoint=tmp_path, hooks=hooks)
    counter["n"] = 0
    seen: list[dict] = []
    again = fit(m := _model(), _data(), None, _cfg(epochs=5), checkpoint=tmp_path, hooks=hooks,
                progress=seen.append)
    assert seen == [] and counter == {"n": 30}  # restored, nothing trained again
    assert again.epochs_run == first.epochs_run == 3
    assert [h["loss"] for h in again.history] == [h["loss"] for h in first.history]
    assert torch.equal(_params(m), _params(ref))


def test_checkpoint_of_other_config_is_ignored(tmp_path: Path) -> None:
    fit(_model(), _data(), None, _cfg(epochs=1), checkpoint=tmp_path)
    with pytest.warns(RuntimeWarning, match="different training configuration"):
        res = fit(_model(), _data(), None, _cfg(epochs=2, lr=0.01), checkpoint=tmp_path)
    assert res.resumed_epochs == 0 and len(res.history) == 2


# ----------------------------------------------------------------- TinyImageNet


def _jpeg(path: Path, color: tuple[int, int, int], size: int = 64) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path, "JPEG", quality=95)


WNIDS = ("n01443537", "n01629819", "n01641577")
COLORS = ((220, 20, 20), (20, 220, 20), (20, 20, 220))


def _tiny_imagenet(root: Path, per_class: int = 6, val_per_class: int = 2) -> Path:
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")
    (root / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
        "n00000001\tunused\n")
    lines = []
    for k, (w, c) in enumerate(zip(WNIDS, COLORS)):
        for i in range(per_class):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", c)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(val_per_class):
            name = f"val_{k * val_per_class + i}.JPEG"
            _jpeg(root / "val" / "images" / name, c)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tinyimagenet_own_layout(tmp_path: Path) -> None:
    root = _tiny_imagenet(tmp_path / "tiny-imagenet-200")
    b = load_dataset(DatasetSpec(kind="tinyimagenet", path=str(root), streaming="off"))
    assert b.input_shape == (3, 64, 64) and b.num_classes == 3
    assert b.class_names == ["goldfish", "European fire salamander", "n01641577"]
    assert b.sizes()["test"] == 6 and b.sizes()["train"] + b.sizes()["val"] == 18
    assert b.test.tensors[1].tolist() == [0, 0, 1, 1, 2, 2]
    x = b.test.tensors[0] * torch.tensor(b.std).view(1, -1, 1, 1) + torch.tensor(
        b.mean).view(1, -1, 1, 1)
    assert x[0, 0].mean() > 0.8 and x[0, 1].mean() < 0.2  # red goldfish
    assert isinstance(b.train, PixelSplit)  # exact uint8 origin -> uint8 on a GPU


@pytest.mark.parametrize("breakage, named", [
    (lambda r: (r / "val" / "val_annotations.txt").unlink(), "val_annotations.txt"),
    (lambda r: (r / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\n"),
     "line 1"),
    (lambda r: (r / "wnids.txt").write_text("n01443537\n"), "wnids.txt"),
    (lambda r: [f.unlink() for f in (r / "train" / WNIDS[1] / "images").iterdir()],
     WNIDS[1]),
])
def test_tinyimagenet_malformed_names_path_and_layout(tmp_path: Path, breakage: object,
                                                      named: str) -> None:
    root = _tiny_imagenet(tmp_path / "t", per_class=2, val_per_class=1)
    breakage(root)  # type: ignore[operator]
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetSpec(kind="tinyimagenet", path=str(root)))
    msg = str(err.value)
    assert named in msg and "train/<wnid>/images/*.JPEG" in msg and "\n" not in msg
    with pytest.raises(DatasetError, match="does not exist.*TinyImageNet layout"):
        load_dataset(DatasetSpec(kind="tinyimagenet", path=str(tmp_path / "missing")))


# ----------------------------------------------------------------- streaming


def _folder(root: Path, n: int, side: int) -> Path:
    for ci, c in enumerate(COLORS):
        for i in range(n):
            _jpeg(root / f"class{ci}" / f"{i}.jpg", c, side)
    return root


def test_streamed_folder_trains_like_resident(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=8, side=16)
    spec = {"kind": "imagefolder", "path": str(root), "image_size": 16}
    streamed = load_dataset(DatasetSpec(**spec, streaming="on"))  # type: ignore[arg-type]
    resident = load_dataset(DatasetSpec(**spec, streaming="off"))  # type: ignore[arg-type]
    assert isinstance(streamed.train, StreamingImages)
    assert streamed.sizes() == resident.sizes() and streamed.mean == pytest.approx(resident.mean)
    # Same files, same order: lazily decoded tensors equal the resident ones.
    assert torch.allclose(streamed.val.tensors[0][:], resident.val.tensors[0], atol=1e-5)
    res = fit(m := _model(), streamed.train, streamed.val, _cfg(epochs=3, data_workers=1),
              augment=streamed.augment)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    acc = evaluate(m, streamed.test, device="cpu", workers=0).accuracy
    assert acc == pytest.approx(evaluate(m, resident.test, device="cpu").accuracy)


def test_streaming_never_holds_the_whole_folder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    n_per, side, batch = 20, 96, 4
    root = _folder(tmp_path / "f", n=n_per, side=side)
    whole = 3 * n_per * side * side * 3  # bytes of every image decoded as uint8
    alive: set[int] = set()
    peak_alive = [0]
    real = StreamingImages.pixels

    def counted(self: StreamingImages, i: int) -> torch.Tensor:
        t = real(self, i)
        alive.add(id(t))
        weakref.finalize(t, alive.discard, id(t))
        peak_alive[0] = max(peak_alive[0], len(alive))
        return t

    monkeypatch.setattr(StreamingImages, "pixels", counted)
    spec = {"kind": "imagefolder", "path": str(root), "image_size": side,
            "val_fraction": 0.1, "test_fraction": 0.1}
    b = load_dataset(DatasetSpec(**spec, streaming="on"))  # type: ignore[arg-type]
    batches = StreamingBatches(b.train, torch.device("cpu"), batch, workers=0)
    gc.collect()
    tracemalloc.start()
    try:
        seen = sum(len(y) for _, y in batches.epoch(Generators(0, torch.device("cpu")), None))
        _, streamed_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        load_dataset(DatasetSpec(**spec, streaming="off"))  # control: decodes everything
        _, resident_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == len(b.train) > 4 * batch
    assert peak_alive[0] <= batch  # never more decoded images alive than one batch
    assert resident_peak >= whole  # the probe sees a whole-folder decode ...
    assert streamed_peak < whole / 4  # ... and the streamed epoch never does


def test_corrupt_image_in_streamed_folder_names_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=6, side=16)
    b = load_dataset(DatasetSpec(kind="imagefolder", path=str(root), image_size=16,
                                 streaming="on", val_fraction=0.2, test_fraction=0.2))
    bad = b.train.paths[3]  # type: ignore[attr-defined]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # valid header, truncated body
    with pytest.raises(Exception, match=f"{bad.name}: cannot read image"):
        fit(_model(), b.train, None, _cfg(epochs=1, data_workers=1))  # error from a worker
    with pytest.raises(DatasetError, match=f"{bad.name}: cannot read image"):
        fit(_model(), b.train, None, _cfg(epochs=1, data_workers=0))


def test_streaming_auto_decides_from_memory_estimate(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pi_opt.data import _streamed

    root = _folder(tmp_path / "f", n=4, side=16)
    spec = DatasetSpec(kind="imagefolder", path=str(root), image_size=16)
    assert not isinstance(load_dataset(spec).train, StreamingImages)
    monkeypatch.setattr(_streamed, "STREAM_ABOVE_BYTES", 12 * 3 * 16 * 16 * 4 - 1)
    assert isinstance(load_dataset(spec).train, StreamingImages)


def test_decode_threads_error_names_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=3, side=8)
    bad = root / "class0" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DatasetError, match="1.jpg"):
        _images.decode_all(sorted(root.rglob("*.jpg")), 8, "RGB")


def test_killed_baseline_training_resumes_from_its_epoch(tmp_path: Path) -> None:
    from pi_opt.search import SearchConfig, obtain_baseline, resolve_spec

    cfg = SearchConfig.model_validate({
        "data": {"kind": "digits", "max_train": 200},
        "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
                  "input_shape": [1, 8, 8], "num_classes": 10},
        "baseline": {"epochs": 3}})
    data = load_dataset(cfg.data)
    spec = resolve_spec(cfg, data)
    epochs: list[int] = []
    with pytest.raises(Cancelled):  # the worker dies during epoch 2
        obtain_baseline(cfg, spec, data, tmp_path, progress=lambda ev: epochs.append(
            ev["epoch"]), should_stop=lambda: len(epochs) >= 1)
    assert any((tmp_path / "baseline-checkpoint").rglob("train_state.pt"))
    art = obtain_baseline(cfg, spec, data, tmp_path,
                          progress=lambda ev: epochs.append(ev["epoch"]))
    assert epochs == [1, 2, 3]  # epoch 1 was not trained again
    assert not (tmp_path / "baseline-checkpoint").exists()  # cleaned up once cached
    assert art.manifest.metrics["val_accuracy"] > 0


def test_safetensors_with_header_length_128_mod_256_is_not_a_pickle(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pi_opt.artifacts import read_safetensors
    from pi_opt.errors import UnsafeFormatError

    for n in range(1, 300):  # find a tensor name whose header length starts with byte 0x80
        f = tmp_path / "w.safetensors"
        save_file({"w" * n: torch.ones(2)}, str(f))
        if f.read_bytes()[:1] == b"\x80":
            break
    else:  # pragma: no cover
        pytest.fail("no header length of 128 mod 256 found")
    assert torch.equal(read_safetensors(f)["w" * n], torch.ones(2))
    torch.save({"w": torch.ones(2)}, tmp_path / "p.safetensors")  # a zip: still refused
    with pytest.raises(UnsafeFormatError):
        read_safetensors(tmp_path / "p.safetensors")
    import pickle
    (tmp_path / "q.safetensors").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    with pytest.raises(UnsafeFormatError):
        read_safetensors(tmp_path / "q.safetensors")
