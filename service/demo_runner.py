"""Subprocess entry of one demo: ``python -m service.demo_runner`` with JSON on stdin.

Loads the job's test split (upload references resolved), picks sample ``index`` and
runs ``mpc.demo.run_demo`` on the front point's artifact. Prints one JSON line:
``{"result": {...}}`` or ``{"error": <problem>}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    """Subprocess entry: run one demo from JSON on stdin, write ``{result}`` or ``{error}`` JSON."""
    from service.lifeline import die_with_parent

    die_with_parent()
    args: dict[str, Any] = json.loads(sys.stdin.read())
    from pi_opt.errors import PiOptError
    from service.problems import ProblemError, from_pi_opt

    try:
        out = {"result": run(args)}
    except PiOptError as exc:
        out = {"error": from_pi_opt(exc).to_problem()}
    except ProblemError as exc:
        out = {"error": exc.to_problem()}
    except ImportError as exc:
        out = {"error": ProblemError(503, "mpc-unavailable",
                                     f"the MPC backend cannot be loaded: {exc}").to_problem()}
    print(json.dumps(out), flush=True)
    return 0


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Encrypted inference of test image ``index`` of the job's dataset with one front point.

        Raises :class:`~service.problems.ProblemError` 422 ``index-out-of-range``.
    """
    from pi_opt.data import DatasetSpec, load_dataset
    from service.jobrunner import resolve
    from service.problems import ProblemError

    spec = resolve({"spec": args["spec"], "principal_id": args["principal_id"],
                    "database_url": args["database_url"], "uploads_dir": args["uploads_dir"]})
    data = load_dataset(DatasetSpec.model_validate(spec.get("data") or {}))
    x, y = data.test.tensors
    index = int(args["index"])
    if not 0 <= index < len(y):
        raise ProblemError(422, "index-out-of-range",
                           f"index must be in 0..{len(y) - 1} (test split size {len(y)})")
    from mpc.demo import run_demo

    result = run_demo(args["artifact_dir"], x[index])
    body: dict[str, Any] = result.model_dump(mode="json")
    body.setdefault("index", index)
    body["label"] = int(y[index])
    if data.class_names:
        body["label_name"] = data.class_names[int(y[index])]
    return body


if __name__ == "__main__":
    sys.exit(main())
