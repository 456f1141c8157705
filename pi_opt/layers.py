"""The layers of a model that cost communication in 2PC, other than its ReLU sites.

:func:`protocol_layers` traces the model with :class:`pi_opt.sites.SiteTracer` (as the
MPC lowering does) and lists, in execution order:

* ``linear``: Conv2d / Linear (private weights: one Beaver product opening the input
  and the weight), and BatchNorm that does *not* fold into the conv/linear producing
  its input (:func:`bn_folds`; folded BN costs nothing), as a per-channel product;
* ``max_pool``: CrypTen's comparison tree over each ``k*k`` window;
* ``relu``: a ReLU that is not a site (``F.relu``, ``.relu()``, a plain ``nn.ReLU``).

Element counts are per sample (batch excluded). Pure torch (no crypten); the MPC
lowering applies the same fold rule through :func:`bn_folds`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.fx
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from pi_opt.sites import SiteTracer

LayerKind = Literal["linear", "max_pool", "relu"]


class LayerProfile(BaseModel):
    """One communicating non-site layer; counts per sample.

    ``input_elements``: elements of the layer's input; ``weight_elements``: elements
    of the private operand opened once per batch (conv/linear weight, BN scale);
    ``output_elements``; ``window``: ``k*k`` of a max-pool (0 otherwise).
    """

    model_config = ConfigDict(extra="forbid")
    kind: LayerKind
    name: str
    input_elements: int
    weight_elements: int = 0
    output_elements: int
    window: int = 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def node_shape(node: Any) -> tuple[int, ...]:
    """Per-sample output shape of a shape-propagated fx node (``()`` if not a tensor)."""
    meta = getattr(node, "meta", {}).get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return ()
    return tuple(int(s) for s in meta.shape[1:])


def bn_folds(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when BatchNorm ``node`` folds into its input's producer: a Conv2d/Linear
    module call whose only user is this BatchNorm."""
    src = node.args[0] if node.args else None
    return (isinstance(src, torch.fx.Node) and src.op == "call_module"
            and isinstance(modules.get(str(src.target)), (nn.Conv2d, nn.Linear))
            and len(src.users) == 1)


def traced(model: nn.Module, input_shape: tuple[int, ...]) -> torch.fx.GraphModule:
    """``model`` traced with :class:`SiteTracer` and shape-propagated on one zero sample
    (eval mode is the caller's business). Raises whatever fx raises."""
    gm = torch.fx.GraphModule(model, SiteTracer().trace(model))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device=device))
    return gm


def _module_layer(node: torch.fx.Node, mod: nn.Module, mods: dict[str, nn.Module]
                  ) -> LayerProfile | None:
    src = node.args[0] if node.args else None
    n_in = _numel(node_shape(src)) if isinstance(src, torch.fx.Node) else 0
    n_out = _numel(node_shape(node))
    name = str(node.target)
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        return LayerProfile(kind="linear", name=name, input_elements=n_in,
                            weight_elements=int(mod.weight.numel()), output_elements=n_out)
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and not bn_folds(node, mods):
        return LayerProfile(kind="linear", name=name, input_elements=n_in,
                            weight_elements=int(mod.num_features), output_elements=n_out)
    if isinstance(mod, nn.ReLU):
        return LayerProfile(kind="relu", name=name, input_elements=n_out,
                            output_elements=n_out)
    if isinstance(mod, nn.MaxPool2d):
        ks = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size,) * 2
        return LayerProfile(kind="max_pool", name=name, input_elements=n_in,
                            output_elements=n_out, window=int(ks[0]) * int(ks[1]))
    return None


def _is_functional_relu(node: torch.fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in (F.relu, torch.relu))
            or (node.op == "call_method" and node.target in ("relu", "relu_")))


def protocol_layers(model: nn.Module, input_shape: tuple[int, ...]
                    ) -> tuple[list[LayerProfile], int] | None:
    """(layers, output elements per sample) of ``model``; None if it is not fx-traceable.

    ReLU sites (``MixedActivation`` modules) are not listed: the profile's sites
    describe them.
    """
    try:
        gm = traced(model, input_shape)
    except Exception:  # noqa: BLE001 - untraceable models have no layer structure
        return None
    mods = dict(gm.named_modules())
    layers: list[LayerProfile] = []
    out_elements = 0
    for node in gm.graph.nodes:
        if node.op == "call_module":
            layer = _module_layer(node, mods[str(node.target)], mods)
            if layer is not None:
                layers.append(layer)
        elif _is_functional_relu(node):
            n = _numel(node_shape(node))
            layers.append(LayerProfile(kind="relu", name=node.name, input_elements=n,
                                       output_elements=n))
        elif node.op == "output" and isinstance(node.args[0], torch.fx.Node):
            out_elements = _numel(node_shape(node.args[0]))
    return layers, out_elements


__all__ = ["LayerKind", "LayerProfile", "bn_folds", "node_shape", "protocol_layers", "traced"]
