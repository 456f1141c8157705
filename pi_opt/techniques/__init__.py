"""ReLU-reduction techniques as registered plugins.

Built-ins: ``snl`` (baseline), ``autorep``, ``deepreduce``, ``deepreshape``, ``circa``.
Third-party packages add techniques through the ``pi_opt.techniques`` entry-point
group (each entry point is a module or class that calls ``register_technique``).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from pi_opt.techniques.base import (
    TECHNIQUES, Candidate, Technique, TechniqueConfig, TechniqueContext, baseline_candidate,
    create_technique, list_techniques, register_technique,
)

_BUILTIN = ("snl", "autorep", "deepreduce", "deepreshape", "circa")

for _name in _BUILTIN:
    import_module(f"pi_opt.techniques.{_name}")

for _ep in entry_points(group="pi_opt.techniques"):
    _ep.load()

__all__ = [
    "TECHNIQUES", "Candidate", "Technique", "TechniqueConfig", "TechniqueContext",
    "baseline_candidate", "create_technique", "list_techniques", "register_technique",
]
