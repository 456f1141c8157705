"""Discover ReLU sites in a model and replace each with a :class:`MixedActivation`.

Module ReLUs (``nn.ReLU`` instances, each called once) are swapped in place, so
site names equal module paths (``layer1.0.relu1``). Functional ReLUs
(``F.relu``, ``torch.relu``, ``x.relu()``) and ReLU modules called more than once
need a ``torch.fx`` graph; then the model becomes a ``GraphModule`` whose new
sites are named ``fx_<node>``. :func:`prepare_sites` is deterministic, which is
what makes artifacts reloadable from (spec, recipe, weights).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from pi_opt.activations import MixedActivation
from pi_opt.errors import ModelFormatError

_FUNCTIONAL_RELUS = {F.relu, torch.relu, torch.relu_, torch.nn.functional.relu_}
_METHOD_RELUS = {"relu", "relu_"}


class SiteTracer(torch.fx.Tracer):
    """fx tracer that keeps ReLU and MixedActivation modules as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """Keep ReLU and MixedActivation modules whole; defer to fx for the rest."""
        if isinstance(m, (MixedActivation, nn.ReLU)):
            return True
        return super().is_leaf_module(m, qualname)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def is_prepared(model: nn.Module) -> bool:
    """True when the model contains at least one MixedActivation site."""
    return any(isinstance(m, MixedActivation) for m in model.modules())


def prepare_sites(model: nn.Module) -> nn.Module:
    """Return ``model`` (or an equivalent GraphModule) with every ReLU as a MixedActivation.

    Idempotent: a prepared model is returned unchanged.
    """
    if is_prepared(model) and not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return model
    graph: torch.fx.Graph | None
    try:
        graph = SiteTracer().trace(model)
    except Exception:  # untraceable (data-dependent control flow): module swap only
        graph = None
    needs_fx = False
    if graph is not None:
        calls = Counter(
            n.target for n in graph.nodes
            if n.op == "call_module" and isinstance(model.get_submodule(str(n.target)), nn.ReLU)
        )
        needs_fx = any(c > 1 for c in calls.values()) or any(
            (n.op == "call_function" and n.target in _FUNCTIONAL_RELUS)
            or (n.op == "call_method" and n.target in _METHOD_RELUS)
            for n in graph.nodes
        )
    if not needs_fx:
        for name, mod in list(model.named_modules()):
            if isinstance(mod, nn.ReLU):
                _set_submodule(model, name, MixedActivation())
        return model
    assert graph is not None
    seen: Counter[str] = Counter()
    relu_nodes = {n for n in graph.nodes if n.op == "call_module"
                  and isinstance(model.get_submodule(str(n.target)), nn.ReLU)}
    for node in list(graph.nodes):
        new_name: str | None = None
        if node in relu_nodes:
            seen[str(node.target)] += 1
            new_name = str(node.target) if seen[str(node.target)] == 1 else (
                f"{node.target}__{seen[str(node.target)]}")
            args = (node.args[0],)
        elif (node.op == "call_function" and node.target in _FUNCTIONAL_RELUS) or (
            node.op == "call_method" and node.target in _METHOD_RELUS
        ):
            new_name = f"fx_{node.name}"
            args = (node.args[0],)
        if new_name is None:
            continue
        _set_submodule(model, new_name, MixedActivation())
        with graph.inserting_after(node):
            repl = graph.call_module(new_name, args)
        node.replace_all_uses_with(repl)
        graph.erase_node(node)
    gm = torch.fx.GraphModule(model, graph, class_name=type(model).__name__)
    for name, mod in list(gm.named_modules()):  # ReLU modules no longer referenced
        if isinstance(mod, nn.ReLU):
            _set_submodule(gm, name, nn.Identity())
    return gm


def iter_sites(model: nn.Module) -> Iterator[tuple[str, MixedActivation]]:
    """Yield ``(name, site)`` for every MixedActivation, in module order."""
    for name, mod in model.named_modules():
        if isinstance(mod, MixedActivation):
            yield name, mod


def site_dict(model: nn.Module) -> dict[str, MixedActivation]:
    """``{qualified name: MixedActivation}`` of the model's sites, in module order."""
    return dict(iter_sites(model))


def stage_of(site_name: str) -> str:
    """Stage label of a site: ``layerN`` for zoo models, else the top-level module name."""
    head = site_name.split(".", 1)[0]
    if head.startswith("stem"):
        return "stem"
    return head.split("__", 1)[0]


def record_site_shapes(model: nn.Module, example: torch.Tensor) -> None:
    """Run one forward pass (eval mode, no grad) so every site learns its input shape."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    missing = [n for n, s in iter_sites(model) if s.input_shape is None]
    if missing:
        raise ModelFormatError(f"ReLU sites never executed on the example input: {missing}")


def materialize_all(model: nn.Module, example: torch.Tensor, granularity: str = "element") -> None:
    """Record shapes and allocate an all-ReLU kinds map for every site not yet materialized."""
    record_site_shapes(model, example)
    for _, site in iter_sites(model):
        if not site.materialized:
            assert site.input_shape is not None
            site.materialize(site.input_shape, granularity)  # type: ignore[arg-type]


__all__ = [
    "SiteTracer", "is_prepared", "iter_sites", "materialize_all", "prepare_sites",
    "record_site_shapes", "site_dict", "stage_of",
]
