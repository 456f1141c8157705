"""Models, ReLU counting, site replacement, artifacts and bad inputs."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from pi_opt.activations import Kind, MixedActivation
from pi_opt.artifacts import (
    ArchSpec, ModelSpec, build_plain_model, load_artifact, read_safetensors, save_artifact,
)
from pi_opt.errors import ConfigError, ModelFormatError, ShapeMismatchError, UnknownNameError, UnsafeFormatError
from pi_opt.models import create_model
from pi_opt.profile import profile_model
from pi_opt.sites import iter_sites, materialize_all, prepare_sites, stage_of


# ---- counting against hand-computed numbers ------------------------------------------
def test_resnet18_cifar_counts_both_conventions() -> None:
    # 4 ReLU layers per stage: 64*32*32*4, 128*16*16*4, 256*8*8*4, 512*4*4*4
    by_hand = 64 * 32 * 32 * 4 + 128 * 16 * 16 * 4 + 256 * 8 * 8 * 4 + 512 * 4 * 4 * 4
    assert by_hand == 491_520
    p = profile_model(create_model("resnet18"), (3, 32, 32))
    assert p.relus == 491_520
    assert p.by_stage() == {"layer1": 262_144, "layer2": 131_072, "layer3": 65_536,
                            "layer4": 32_768}
    p_stem = profile_model(create_model("resnet18", stem_relu=True), (3, 32, 32))
    assert p_stem.relus == 557_056 == by_hand + 64 * 32 * 32
    assert p.macs == 555_422_720  # conv + fc MACs, matches the published ~555M


def test_wrn_and_hybrenet_counts() -> None:
    p = profile_model(create_model("wrn22_8"), (3, 32, 32))
    assert p.by_stage() == {"layer1": 671_744, "layer2": 458_752, "layer3": 229_376}
    h = profile_model(create_model("hybrenet", base_width=16, multipliers=(5, 5, 3)), (3, 32, 32))
    assert h.relus == 326_656
    assert h.by_stage()["layer3"] == 400 * 8 * 8 * 4


def test_mobilenet_v2_counts() -> None:
    """CIFAR MobileNetV2 on 32x32: stem 32x32x32, per block expansion + depthwise ReLUs
    (stage 1 has no expansion), head 1280x4x4; depthwise convs are grouped."""
    p = profile_model(create_model("mobilenet_v2"), (3, 32, 32))
    assert p.relus == 1_502_208 and len(p.sites) == 35
    assert p.by_stage()["stem"] == 32 * 32 * 32 and p.by_stage()["layer1"] == 32 * 32 * 32
    assert p.by_stage()["head"] == 1280 * 4 * 4
    assert p.by_stage()["layer7"] == 2 * 960 * 4 * 4


def test_maxpool_comparisons_counted() -> None:
    p = profile_model(create_model("vgg16", pool="max", width_mult=0.125), (3, 32, 32))
    # pool outputs: 8x16x16, 16x8x8, 32x4x4, 64x2x2, 64x1x1, 3 comparisons each
    assert p.maxpool_comparisons == 3 * (8 * 256 + 16 * 64 + 32 * 16 + 64 * 4 + 64)


def test_identity_poly_circa_counting() -> None:
    m = prepare_sites(create_model("resnet_mini", widths=(2, 2, 2)))
    materialize_all(m, torch.zeros(1, 1, 8, 8))
    name, site = next(iter_sites(m))
    k = site.kinds.clone().view(-1)
    k[:10] = Kind.IDENTITY
    k[10:20] = Kind.POLY
    k[20:25] = Kind.CIRCA
    site.set_kinds(k.view_as(site.kinds))
    site.set_poly(torch.tensor([[0.1, 0.5, 0.2], [0.0, 1.0, 0.0]]))
    site.set_circa(8, 16)
    p = profile_model(m, (1, 8, 8))
    s = next(x for x in p.sites if x.name == name)
    assert (s.identity, s.poly, s.circa, s.relu) == (10, 10, 5, s.elements - 25)
    # channel 0 holds flat positions 0..63: all poly positions have a2 = 0.2 != 0
    assert s.poly_mults == 10
    assert p.relus == p.site_elements - 20


# ---- site discovery --------------------------------------------------------------
class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        x = self.act(self.c1(x))
        x = self.act(self.c2(x))        # the same module called twice
        x = F.relu(x) + torch.relu(x)   # two functional ReLUs
        return self.fc(x.flatten(1)).relu()


def test_functional_and_reused_relus_become_sites() -> None:
    torch.manual_seed(0)
    model = Functional()
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    prepared = prepare_sites(model)
    names = [n for n, _ in iter_sites(prepared)]
    assert len(names) == 5 and "act" in names and "act__2" in names
    assert torch.equal(prepared(x), ref)
    assert profile_model(prepared, (1, 8, 8)).relus == 3 * 64 * 4 + 4


def test_site_replacement_keeps_outputs_and_stages() -> None:
    torch.manual_seed(0)
    m = create_model("resnet_mini")
    x = torch.randn(3, 1, 8, 8)
    m.eval()
    ref = m(x)
    p = prepare_sites(m)
    assert torch.equal(p(x), ref)
    assert {stage_of(n) for n, _ in iter_sites(p)} == {"stem", "layer1", "layer2", "layer3"}
    assert all(isinstance(s, MixedActivation) for _, s in iter_sites(p))


# ---- artifacts --------------------------------------------------------------------
def _spec(**kw) -> ModelSpec:
    return ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"widths": [4, 4, 8], **kw}),
                     input_shape=(1, 8, 8), num_classes=10)


def test_artifact_round_trip_is_bit_exact(tmp_path) -> None:
    torch.manual_seed(1)
    spec = _spec()
    m = prepare_sites(spec.build())
    materialize_all(m, torch.zeros(1, 1, 8, 8))
    g = torch.Generator().manual_seed(0)
    for i, (_, s) in enumerate(iter_sites(m)):
        s.set_kinds(torch.randint(0, 3, s.kinds.shape, generator=g))
        s.set_poly(torch.randn(s.input_shape[0], 3, generator=g))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
    man = save_artifact(m, spec, tmp_path / "a", history=[{"technique": "test"}])
    art = load_artifact(tmp_path / "a")
    x = torch.randn(5, 1, 8, 8)
    m.eval()
    assert torch.equal(m(x), art.model(x))
    assert art.manifest.profile == man.profile
    assert art.manifest.recipe.history == [{"technique": "test"}]


def test_unknown_arch_and_kwargs() -> None:
    with pytest.raises(UnknownNameError, match="unknown architecture 'resnet9000'"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="does not accept"):
        create_model("resnet18", depth=3)


def test_shape_mismatch_and_corrupt_weights(tmp_path) -> None:
    spec = _spec()
    good = spec.build()
    wrong = _spec(widths=[4, 4, 16]).build()
    save_file(wrong.state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ShapeMismatchError, match="shape mismatch"):
        build_plain_model(spec, tmp_path / "wrong.safetensors")
    state = good.state_dict()
    del state["fc.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelFormatError, match="missing"):
        build_plain_model(spec, tmp_path / "missing.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ModelFormatError, match="not a valid safetensors"):
        read_safetensors(tmp_path / "corrupt.safetensors")
    bad_input = ModelSpec(arch=ArchSpec(name="resnet_mini", kwargs={"in_channels": 1}),
                          input_shape=(3, 8, 8), num_classes=10)
    with pytest.raises(ShapeMismatchError, match="does not fit"):
        build_plain_model(bad_input)


def test_corrupt_artifact_detected(tmp_path) -> None:
    spec = _spec()
    m = prepare_sites(spec.build())
    materialize_all(m, torch.zeros(1, 1, 8, 8))
    save_artifact(m, spec, tmp_path / "a")
    w = tmp_path / "a" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum"):
        load_artifact(tmp_path / "a")


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pi_opt_pwned_marker",))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickles_refused_without_executing(tmp_path, kind) -> None:
    marker = "/tmp/pi_opt_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "weights.safetensors"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": _Boom()}))
    else:
        torch.save({"fc.weight": torch.zeros(2)}, path)
    with pytest.raises(UnsafeFormatError, match="refused"):
        read_safetensors(path)
    assert not os.path.exists(marker)


def test_model_spec_rejects_unknown_fields() -> None:
    with pytest.raises(Exception):
        ModelSpec.model_validate_json(json.dumps(
            {"arch": {"name": "resnet18"}, "input_shape": [3, 32, 32], "num_classes": 10,
             "code": "import os"}))
