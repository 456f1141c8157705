"""Lower a (prepared) pi_opt model to a straight-line plan for encrypted execution.

No ONNX: the model is traced with :func:`pi_opt.layers.traced` (ReLU and
MixedActivation stay leaves; shapes from one plaintext forward pass, as the profile
does), and every fx node becomes one :class:`Op` through a table of per-op rules
(:data:`MODULE_RULES`, :data:`FUNCTION_RULES`, :data:`METHOD_RULES`):

* ``conv`` / ``linear`` - BatchNorm that directly follows a conv/linear (its only
  user, :func:`pi_opt.layers.bn_folds`) is folded into the weights in plaintext;
  any other BatchNorm (e.g. WRN's
  pre-activation) becomes ``affine`` (per-channel ``x * scale + shift``);
* ``avg_pool`` / ``adaptive_avg_pool`` / ``add`` / shape ops - linear, local;
* ``max_pool`` - CrypTen's comparison tree, counted as non-linear;
* ``relu`` - exact ReLU on every element (plain ``nn.ReLU``, unmaterialized sites);
* ``mixed`` - a MixedActivation as a :class:`SitePlan`: public index sets of the
  exact-ReLU, polynomial and Circa positions (identity positions are free).

Private tensors (weights, folded BN) live in ``Op.params``; everything else in a
plan (graph, shapes, site index sets, polynomial coefficients, Circa (k, l)) is
public to both parties. :meth:`Plan.public_view` strips the private tensors to
shapes, which is what the client party gets when the weights are private.

:func:`execute` interprets a plan over any :class:`OpBackend`; :class:`PlainBackend`
runs it in float32 (used to check the lowering against the model itself).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from mpc.errors import LoweringError
from pi_opt.activations import Kind, MixedActivation
from pi_opt.circa_faults import FRAC_BITS, circa_relu
from pi_opt.layers import bn_folds, node_shape, traced

OpKind = Literal[
    "input", "conv", "linear", "affine", "avg_pool", "adaptive_avg_pool", "max_pool",
    "add", "mul", "flatten", "view", "reshape", "size", "getitem", "identity",
    "relu", "mixed", "output",
]
Category = Literal["linear", "nonlinear", "shape"]

_NONLINEAR: frozenset[str] = frozenset({"relu", "mixed", "max_pool"})
_LINEAR: frozenset[str] = frozenset(
    {"conv", "linear", "affine", "avg_pool", "adaptive_avg_pool", "add", "mul"})


@dataclass(frozen=True)
class Ref:
    """Reference to the value produced by op number ``index``."""

    index: int


@dataclass(eq=False)
class SitePlan:
    """Public layout of one MixedActivation site.

    Positions are flat per-sample element indices into ``C*H*W`` (element
    granularity) or channel indices (channel granularity). ``poly_coeffs`` holds
    ``(a0, a1, a2)`` per polynomial position (float32 ``[n_poly, 3]``); ``poly_quad``
    marks the positions that need the secure square (``a2 != 0``).
    """

    name: str
    shape: tuple[int, int, int]
    granularity: Literal["element", "channel"]
    relu_idx: Tensor
    circa_idx: Tensor
    poly_idx: Tensor
    poly_coeffs: Tensor
    poly_quad: Tensor
    circa_k: int = 0
    circa_l: int = 64
    frac_bits: int = FRAC_BITS

    @property
    def positions(self) -> int:
        """Positions of the site: ``C`` (channel granularity) or ``C*H*W`` (element)."""
        c, h, w = self.shape
        return c if self.granularity == "channel" else c * h * w

    @property
    def per_position(self) -> int:
        """Scalar elements per position (``H*W`` for channel granularity, else 1)."""
        c, h, w = self.shape
        return h * w if self.granularity == "channel" else 1

    def counts(self) -> dict[str, int]:
        """Per-sample element counts: relu, circa, poly, poly_mults, identity."""
        m = self.per_position
        n_relu, n_circa, n_poly = (int(t.numel()) * m for t in
                                   (self.relu_idx, self.circa_idx, self.poly_idx))
        return {"relu": n_relu, "circa": n_circa, "poly": n_poly,
                "poly_mults": int(self.poly_quad.sum()) * m,
                "identity": self.positions * m - n_relu - n_circa - n_poly}


@dataclass(eq=False)
class Op:
    """One step of a plan. ``args`` hold :class:`Ref` s and public literals.

    ``params``: private tensors of the server (weights); ``attrs``: public attributes.
    ``out_shape``: per-sample output shape (batch excluded; ``()`` for non-tensors).
    ``macs``: per-sample multiply-accumulates of conv/linear ops.
    """

    kind: OpKind
    name: str
    args: tuple[Any, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Tensor] = field(default_factory=dict)
    site: SitePlan | None = None
    out_shape: tuple[int, ...] = ()
    macs: int = 0

    @property
    def category(self) -> Category:
        """``nonlinear`` (relu, mixed, max_pool), ``linear`` (conv, pools, +, ...) or ``shape``."""
        if self.kind in _NONLINEAR:
            return "nonlinear"
        if self.kind in _LINEAR:
            return "linear"
        return "shape"

    def counts(self) -> dict[str, int]:
        """Per-sample cost counts of this op (relu, circa, poly_mults, maxpool_cmp, macs)."""
        out = {"relu": 0, "circa": 0, "poly_mults": 0, "maxpool_comparisons": 0,
               "macs": self.macs}
        if self.kind == "relu":
            out["relu"] = _numel(self.out_shape)
        elif self.kind == "mixed" and self.site is not None:
            c = self.site.counts()
            out.update(relu=c["relu"], circa=c["circa"], poly_mults=c["poly_mults"])
        elif self.kind == "max_pool":
            kh, kw = _pair(self.attrs["kernel_size"])
            out["maxpool_comparisons"] = _numel(self.out_shape) * (kh * kw - 1)
        return out


@dataclass(eq=False)
class Plan:
    """A lowered model: ``ops[0]`` is the input, ``ops[-1]`` the output."""

    ops: list[Op]
    input_shape: tuple[int, ...]
    num_classes: int

    def public_view(self) -> Plan:
        """Copy with every private tensor replaced by a ``meta`` tensor of the same shape."""
        ops = [dataclasses.replace(
            op, params={k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                        for k, v in op.params.items()}) for op in self.ops]
        return Plan(ops=ops, input_shape=self.input_shape, num_classes=self.num_classes)

    def counts(self) -> dict[str, int]:
        """Per-sample totals over all ops (same keys as :meth:`Op.counts`)."""
        tot: dict[str, int] = {}
        for op in self.ops:
            for k, v in op.counts().items():
                tot[k] = tot.get(k, 0) + v
        return tot

    def sites(self) -> Iterator[SitePlan]:
        """Yield the :class:`SitePlan` of every materialized MixedActivation op, in plan order."""
        for op in self.ops:
            if op.site is not None:
                yield op.site


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1] if len(v) > 1 else v[0])
    return int(v), int(v)


# --------------------------------------------------------------------------- lowering


def _site_plan(name: str, site: MixedActivation) -> SitePlan | None:
    """Index sets of a materialized site; ``None`` for an all-ReLU (unmaterialized) site."""
    if not site.materialized:
        return None
    if site.input_shape is None:
        raise LoweringError(f"site {name}: unknown input shape")
    c, h, w = site.input_shape
    gran = site.granularity
    kinds = (site.kinds.reshape(c) if gran == "channel" else site.full_kinds().reshape(-1))
    kinds = kinds.to(torch.int64).cpu()

    def idx(kind: Kind) -> Tensor:
        return (kinds == int(kind)).nonzero().view(-1)

    poly_idx = idx(Kind.POLY)
    coeffs = torch.zeros(0, 3)
    if poly_idx.numel():
        if site.poly.numel() == 0:
            raise LoweringError(f"site {name}: POLY positions without coefficients")
        channel = poly_idx if gran == "channel" else poly_idx // (h * w)
        coeffs = site.poly.detach().float().cpu()[channel]
    k, l, f = (int(v) for v in site.circa_bits)
    circa_idx = idx(Kind.CIRCA)
    if circa_idx.numel() and f != FRAC_BITS:
        raise LoweringError(
            f"site {name}: Circa frac_bits={f}, but CrypTen encodes with {FRAC_BITS} bits")
    return SitePlan(
        name=name, shape=(c, h, w), granularity=gran, relu_idx=idx(Kind.RELU),
        circa_idx=circa_idx, poly_idx=poly_idx, poly_coeffs=coeffs,
        poly_quad=coeffs[:, 2] != 0 if coeffs.numel() else torch.zeros(0, dtype=torch.bool),
        circa_k=k, circa_l=l, frac_bits=f,
    )


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as per-channel ``(scale, shift)``."""
    assert isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
    if bn.running_mean is None or bn.running_var is None:
        raise LoweringError("BatchNorm without running statistics cannot be lowered")
    scale = 1.0 / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    shift = -bn.running_mean.detach().double() * scale
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double() + bn.bias.detach().double()
    return scale, shift


class _Lowering:
    """State of one lowering: the traced graph, the ops emitted so far, node -> op index."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.mods = dict(gm.named_modules())
        self.ops: list[Op] = []
        self.index: dict[torch.fx.Node, int] = {}

    def emit(self, node: torch.fx.Node, op: Op) -> None:
        self.index[node] = len(self.ops)
        self.ops.append(op)

    def alias(self, node: torch.fx.Node, a: Any) -> None:
        """``node`` is the value of ``a`` (a :class:`Ref`): no op (Identity, Dropout, clone)."""
        self.index[node] = a.index

    def ref(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            if a not in self.index:
                raise LoweringError(f"node {a.name} used before definition")
            return Ref(self.index[a])
        if isinstance(a, (tuple, list)):
            return type(a)(self.ref(x) for x in a)
        return a


# ---- call_module rules: (lowering, node, module, target, x) -> None -------------------

ModuleRule = Callable[[_Lowering, torch.fx.Node, Any, str, Any], None]


def _lower_site(lw: _Lowering, node: torch.fx.Node, mod: MixedActivation, target: str,
                x: Any) -> None:
    site = _site_plan(target, mod)
    if site is None:
        lw.emit(node, Op("relu", target, (x,), out_shape=node_shape(node)))
    else:
        lw.emit(node, Op("mixed", target, (x,), site=site, out_shape=node_shape(node)))


def _lower_relu(lw: _Lowering, node: torch.fx.Node, mod: nn.Module, target: str,
                x: Any) -> None:
    lw.emit(node, Op("relu", target, (x,), out_shape=node_shape(node)))


def _weights(mod: nn.Conv2d | nn.Linear) -> dict[str, Tensor]:
    params = {"weight": mod.weight.detach().double().cpu()}
    if mod.bias is not None:
        params["bias"] = mod.bias.detach().double().cpu()
    return params


def _lower_conv(lw: _Lowering, node: torch.fx.Node, mod: nn.Conv2d, target: str,
                x: Any) -> None:
    if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        raise LoweringError(f"{target}: only explicit zero padding is supported")
    out_shape = node_shape(node)
    k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
    lw.emit(node, Op("conv", target, (x,), params=_weights(mod), out_shape=out_shape,
                     macs=_numel(out_shape) * k,
                     attrs={"stride": mod.stride, "padding": mod.padding,
                            "dilation": mod.dilation, "groups": mod.groups}))


def _lower_linear(lw: _Lowering, node: torch.fx.Node, mod: nn.Linear, target: str,
                  x: Any) -> None:
    out_shape = node_shape(node)
    lw.emit(node, Op("linear", target, (x,), params=_weights(mod), out_shape=out_shape,
                     macs=_numel(out_shape) * mod.in_features))


def _lower_bn(lw: _Lowering, node: torch.fx.Node, mod: nn.Module, target: str,
              x: Any) -> None:
    """Fold into the producing conv/linear (:func:`pi_opt.layers.bn_folds`), else ``affine``."""
    scale, shift = _bn_affine(mod)
    if not bn_folds(node, lw.mods):
        lw.emit(node, Op("affine", target, (x,), out_shape=node_shape(node),
                         params={"scale": scale.cpu(), "shift": shift.cpu()}))
        return
    j = x.index
    p = lw.ops[j].params
    shape = (-1,) + (1,) * (p["weight"].dim() - 1)
    p["weight"] = p["weight"] * scale.view(shape)
    p["bias"] = p.get("bias", torch.zeros_like(scale)) * scale + shift
    lw.ops[j].name = f"{lw.ops[j].name}+{target}"
    lw.alias(node, x)


def _window(mod: nn.AvgPool2d | nn.MaxPool2d) -> dict[str, Any]:
    return {"kernel_size": _pair(mod.kernel_size),
            "stride": _pair(mod.stride if mod.stride is not None else mod.kernel_size),
            "padding": _pair(mod.padding)}


def _lower_avg_pool(lw: _Lowering, node: torch.fx.Node, mod: nn.AvgPool2d, target: str,
                    x: Any) -> None:
    if mod.ceil_mode or (not mod.count_include_pad and _pair(mod.padding) != (0, 0)):
        raise LoweringError(f"{target}: ceil_mode / count_include_pad=False "
                            "average pooling is not supported")
    if mod.divisor_override is not None:
        raise LoweringError(f"{target}: divisor_override is not supported")
    lw.emit(node, Op("avg_pool", target, (x,), out_shape=node_shape(node), attrs=_window(mod)))


def _lower_adaptive_avg_pool(lw: _Lowering, node: torch.fx.Node, mod: nn.Module,
                             target: str, x: Any) -> None:
    out_shape = node_shape(node)
    lw.emit(node, Op("adaptive_avg_pool", target, (x,), out_shape=out_shape,
                     attrs={"output_size": tuple(out_shape[-2:])}))


def _lower_max_pool(lw: _Lowering, node: torch.fx.Node, mod: nn.MaxPool2d, target: str,
                    x: Any) -> None:
    if mod.ceil_mode or mod.return_indices:
        raise LoweringError(f"{target}: ceil_mode / return_indices max pooling "
                            "is not supported")
    lw.emit(node, Op("max_pool", target, (x,), out_shape=node_shape(node),
                     attrs={**_window(mod), "dilation": _pair(mod.dilation)}))


def _lower_passthrough(lw: _Lowering, node: torch.fx.Node, mod: nn.Module, target: str,
                       x: Any) -> None:
    lw.alias(node, x)


def _lower_flatten_module(lw: _Lowering, node: torch.fx.Node, mod: nn.Flatten, target: str,
                          x: Any) -> None:
    lw.emit(node, Op("flatten", target, (x,), out_shape=node_shape(node),
                     attrs={"start_dim": mod.start_dim, "end_dim": mod.end_dim}))


#: Module type -> rule, first match wins (MixedActivation before its ReLU base, if any).
MODULE_RULES: tuple[tuple[type | tuple[type, ...], ModuleRule], ...] = (
    (MixedActivation, _lower_site),
    (nn.ReLU, _lower_relu),
    (nn.Conv2d, _lower_conv),
    (nn.Linear, _lower_linear),
    ((nn.BatchNorm2d, nn.BatchNorm1d), _lower_bn),
    (nn.AvgPool2d, _lower_avg_pool),
    (nn.AdaptiveAvgPool2d, _lower_adaptive_avg_pool),
    (nn.MaxPool2d, _lower_max_pool),
    ((nn.Identity, nn.Dropout), _lower_passthrough),
    (nn.Flatten, _lower_flatten_module),
)


# ---- call_function / call_method rules: (lowering, node, args) -> None ---------------

CallRule = Callable[[_Lowering, torch.fx.Node, tuple[Any, ...]], None]


def _emit_simple(kind: OpKind) -> CallRule:
    """Rule emitting ``Op(kind)`` over all arguments."""
    def rule(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
        lw.emit(node, Op(kind, node.name, args, out_shape=node_shape(node)))
    return rule


def _emit_unary(kind: OpKind) -> CallRule:
    """Rule emitting ``Op(kind)`` over the first argument only."""
    def rule(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
        lw.emit(node, Op(kind, node.name, args[:1], out_shape=node_shape(node)))
    return rule


def _call_flatten(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
    kw = dict(node.kwargs)
    start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
    lw.emit(node, Op("flatten", node.name, args[:1], out_shape=node_shape(node),
                     attrs={"start_dim": start, "end_dim": end}))


def _call_add(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
    if node.kwargs:
        raise LoweringError(f"add with keyword arguments (node {node.name}) is not supported")
    _emit_simple("add")(lw, node, args)


def _call_mul(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
    if node.kwargs or all(isinstance(a, Ref) for a in args):
        raise LoweringError(f"mul of two tensors (node {node.name}) has no encrypted "
                            "implementation (only products with constants)")
    _emit_simple("mul")(lw, node, args)


def _call_getitem(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
    src = node.args[0]
    if not (isinstance(src, torch.fx.Node) and node_shape(src) == ()):
        raise LoweringError(f"indexing a tensor (node {node.name}) has no encrypted "
                            "implementation")
    lw.emit(node, Op("getitem", node.name, args))  # indexing a .size() result


def _call_adaptive_avg_pool(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]
                            ) -> None:
    out_shape = node_shape(node)
    lw.emit(node, Op("adaptive_avg_pool", node.name, args[:1], out_shape=out_shape,
                     attrs={"output_size": tuple(out_shape[-2:])}))


def _call_alias(lw: _Lowering, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
    lw.alias(node, args[0])


FUNCTION_RULES: dict[Any, CallRule] = {
    operator.add: _call_add, torch.add: _call_add, operator.iadd: _call_add,
    operator.mul: _call_mul, torch.mul: _call_mul,
    torch.flatten: _call_flatten,
    F.relu: _emit_unary("relu"), torch.relu: _emit_unary("relu"),
    operator.getitem: _call_getitem,
    F.adaptive_avg_pool2d: _call_adaptive_avg_pool,
}

METHOD_RULES: dict[str, CallRule] = {
    "relu": _emit_unary("relu"), "relu_": _emit_unary("relu"),
    "view": _emit_simple("view"), "reshape": _emit_simple("reshape"),
    "flatten": _call_flatten, "size": _emit_simple("size"),
    "contiguous": _call_alias, "clone": _call_alias,
    "add": _emit_simple("add"), "add_": _emit_simple("add"),
}


# ---- node kinds -----------------------------------------------------------------------


def _node_placeholder(lw: _Lowering, node: torch.fx.Node, input_shape: tuple[int, ...]) -> None:
    if lw.ops:
        raise LoweringError("models with more than one input are not supported")
    lw.emit(node, Op("input", node.name, out_shape=tuple(input_shape)))


def _node_module(lw: _Lowering, node: torch.fx.Node) -> None:
    target = str(node.target)
    mod = lw.mods[target]
    rule = next((r for types, r in MODULE_RULES if isinstance(mod, types)), None)
    if rule is None:
        raise LoweringError(
            f"module {target} ({type(mod).__name__}) has no encrypted implementation")
    rule(lw, node, mod, target, lw.ref(node.args[0]))


def _node_call(lw: _Lowering, node: torch.fx.Node) -> None:
    if node.op == "call_function":
        rule = FUNCTION_RULES.get(node.target)
        what = f"function {getattr(node.target, '__name__', node.target)}"
    else:
        rule = METHOD_RULES.get(str(node.target))
        what = f"method .{node.target}()"
    if rule is None:
        raise LoweringError(f"{what} (node {node.name}) has no encrypted implementation")
    rule(lw, node, lw.ref(tuple(node.args)))


def _num_classes(ops: list[Op]) -> int:
    last = ops[-1].args[0] if ops[-1].args else None
    out_op = ops[last.index] if isinstance(last, Ref) else None
    return int(out_op.out_shape[-1]) if out_op and out_op.out_shape else 0


def lower(model: nn.Module, input_shape: tuple[int, ...], *, num_classes: int | None = None
          ) -> Plan:
    """Trace ``model`` (eval mode) and build its :class:`Plan` for per-sample ``input_shape``.

    Each fx node goes through its rule: :data:`MODULE_RULES` (by module type),
    :data:`FUNCTION_RULES`, :data:`METHOD_RULES`. Raises :class:`LoweringError` for
    operations without an encrypted implementation.
    """
    model = model.eval()
    try:
        gm = traced(model, tuple(input_shape))
    except Exception as exc:
        raise LoweringError(f"model is not torch.fx traceable: {exc}") from exc
    lw = _Lowering(gm)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            _node_placeholder(lw, node, input_shape)
        elif node.op == "output":
            lw.emit(node, Op("output", node.name, args=(lw.ref(node.args[0]),)))
        elif node.op == "call_module":
            _node_module(lw, node)
        elif node.op in ("call_function", "call_method"):
            _node_call(lw, node)
        else:
            raise LoweringError(f"fx node {node.name} ({node.op}) is not supported "
                                "(parameters used outside modules?)")
    return Plan(ops=lw.ops, input_shape=tuple(int(s) for s in input_shape),
                num_classes=_num_classes(lw.ops) if num_classes is None else num_classes)


# --------------------------------------------------------------------------- execution


class OpBackend(Protocol):
    """Arithmetic of one value domain (float tensors, CrypTensors, ...).

    Every method applies op number ``i`` of the plan (``op``) to the batch ``x``
    ``[B, *in_shape]`` and returns ``[B, *op.out_shape]``.
    """

    def conv(self, i: int, op: Op, x: Any) -> Any:
        """2-d convolution with the op's (BN-folded) weight and bias; ``x`` ``[B, C, H, W]``."""

    def linear(self, i: int, op: Op, x: Any) -> Any:
        """``x @ weight.T + bias``; ``x`` ``[B, in_features]`` -> ``[B, out_features]``."""

    def affine(self, i: int, op: Op, x: Any) -> Any:
        """Per-channel ``x * scale + shift`` (an unfolded BatchNorm); shape unchanged."""

    def avg_pool(self, i: int, op: Op, x: Any) -> Any:
        """2-d average pooling with the op's kernel size, stride and padding."""

    def adaptive_avg_pool(self, i: int, op: Op, x: Any) -> Any:
        """Adaptive 2-d average pooling to ``op.attrs['output_size']``."""

    def max_pool(self, i: int, op: Op, x: Any) -> Any:
        """2-d max pooling with the op's kernel size, stride, padding and dilation."""

    def relu(self, i: int, op: Op, x: Any) -> Any:
        """Exact ReLU on every element of ``x``; shape unchanged."""

    def mixed(self, i: int, op: Op, x: Any) -> Any:
        """A MixedActivation site (``op.site``): ReLU/polynomial/Circa/identity per position."""


_BACKEND_KINDS: frozenset[str] = frozenset(
    {"conv", "linear", "affine", "avg_pool", "adaptive_avg_pool", "max_pool", "relu", "mixed"})

OpHook = Callable[[int, Op], AbstractContextManager[Any]]


def execute(plan: Plan, x: Any, backend: OpBackend, *, hook: OpHook | None = None) -> Any:
    """Run ``plan`` on batch ``x`` (``[B, *input_shape]``); ``hook(i, op)`` wraps each op."""
    vals: list[Any] = [None] * len(plan.ops)

    def val(a: Any) -> Any:
        if isinstance(a, Ref):
            return vals[a.index]
        if isinstance(a, (tuple, list)):
            return type(a)(val(v) for v in a)
        return a

    for i, op in enumerate(plan.ops):
        if op.kind == "input":
            vals[i] = x
            continue
        if op.kind == "output":
            return val(op.args[0])
        args = val(op.args)
        with (hook(i, op) if hook is not None and op.category != "shape" else nullcontext()):
            kind = op.kind
            if kind in _BACKEND_KINDS:
                out = getattr(backend, kind)(i, op, args[0])
            elif kind == "add":
                a, b = args[0], args[1]
                out = a + b if not isinstance(a, (int, float)) else b + a
            elif kind == "mul":
                a, b = args[0], args[1]
                out = a * b if not isinstance(a, (int, float)) else b * a
            elif kind == "flatten":
                out = args[0].flatten(op.attrs["start_dim"], op.attrs["end_dim"])
            elif kind in ("view", "reshape"):
                shape = args[1:]
                if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                    shape = tuple(shape[0])
                out = args[0].view(*shape) if kind == "view" else args[0].reshape(*shape)
            elif kind == "size":
                out = args[0].size(*args[1:])
            elif kind == "getitem":
                out = args[0][args[1]]
            else:  # pragma: no cover - lower() emits only the kinds above
                raise LoweringError(f"unknown op kind {kind}")
        vals[i] = out
    raise LoweringError("plan has no output op")


def gather_positions(x: Any, site: SitePlan) -> Any:
    """View ``x`` ([B, C, H, W] or [B, F]) as ``[B, positions(, H*W)]`` (no copy of data)."""
    b = x.size(0)
    if site.granularity == "channel":
        c, h, w = site.shape
        return x.reshape(b, c, h * w)
    return x.reshape(b, site.positions)


def coeff_view(coeffs: Tensor, site: SitePlan) -> Tensor:
    """Per-position coefficient vector shaped to broadcast against a gathered subset."""
    return coeffs.view(1, -1, 1) if site.granularity == "channel" else coeffs.view(1, -1)


class PlainBackend:
    """Float execution of a plan (with its folded weights): a check of the lowering.

    Circa positions use the plaintext fault simulation (:func:`pi_opt.circa_faults.circa_relu`).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def conv(self, i: int, op: Op, x: Tensor) -> Tensor:
        """2-d convolution with the op's (BN-folded) weight and bias; ``x`` ``[B, C, H, W]``."""
        a = op.attrs
        w = op.params["weight"].to(x.dtype)
        b = op.params.get("bias")
        return F.conv2d(x, w, None if b is None else b.to(x.dtype), stride=a["stride"],
                        padding=a["padding"], dilation=a["dilation"], groups=a["groups"])

    def linear(self, i: int, op: Op, x: Tensor) -> Tensor:
        """``x @ weight.T + bias``; ``x`` ``[B, in_features]`` -> ``[B, out_features]``."""
        b = op.params.get("bias")
        return F.linear(x, op.params["weight"].to(x.dtype), None if b is None else b.to(x.dtype))

    def affine(self, i: int, op: Op, x: Tensor) -> Tensor:
        """Per-channel ``x * scale + shift`` (an unfolded BatchNorm); shape unchanged."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x * op.params["scale"].to(x.dtype).view(shape)
                + op.params["shift"].to(x.dtype).view(shape))

    def avg_pool(self, i: int, op: Op, x: Tensor) -> Tensor:
        """2-d average pooling with the op's kernel size, stride and padding."""
        a = op.attrs
        return F.avg_pool2d(x, a["kernel_size"], a["stride"], a["padding"])

    def adaptive_avg_pool(self, i: int, op: Op, x: Tensor) -> Tensor:
        """Adaptive 2-d average pooling to ``op.attrs['output_size']``."""
        return F.adaptive_avg_pool2d(x, op.attrs["output_size"])

    def max_pool(self, i: int, op: Op, x: Tensor) -> Tensor:
        """2-d max pooling with the op's kernel size, stride, padding and dilation."""
        a = op.attrs
        return F.max_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"])

    def relu(self, i: int, op: Op, x: Tensor) -> Tensor:
        """Exact ReLU on every element of ``x``; shape unchanged."""
        return torch.relu(x)

    def mixed(self, i: int, op: Op, x: Tensor) -> Tensor:
        """A MixedActivation site (``op.site``): ReLU/polynomial/Circa/identity per position."""
        site = op.site
        assert site is not None
        flat = gather_positions(x, site)
        out = flat.clone()
        if site.relu_idx.numel():
            out[:, site.relu_idx] = torch.relu(flat[:, site.relu_idx])
        if site.poly_idx.numel():
            sub = flat[:, site.poly_idx]
            c = site.poly_coeffs.to(x.dtype)
            out[:, site.poly_idx] = (coeff_view(c[:, 0], site) + coeff_view(c[:, 1], site) * sub
                                     + coeff_view(c[:, 2], site) * sub * sub)
        if site.circa_idx.numel():
            out[:, site.circa_idx] = circa_relu(flat[:, site.circa_idx], site.circa_k,
                                                site.circa_l, frac_bits=site.frac_bits,
                                                generator=self.generator)
        return out.view(x.shape)


def run_plain(plan: Plan, x: Tensor) -> Tensor:
    """Float execution of ``plan`` on ``x`` ``[B, *input_shape]``."""
    with torch.no_grad():
        return execute(plan, x, PlainBackend())


__all__ = [
    "Op", "OpBackend", "Plan", "PlainBackend", "Ref", "SitePlan", "coeff_view", "execute",
    "gather_positions", "lower", "run_plain",
]
