"""One-file downloads of the front points: ``downloads/<name>.zip`` next to ``report.html``.

Each zip holds the point's artifact folder (``model.json`` + ``weights.safetensors``)
under ``<name>/`` plus ``HOW_TO_LOAD.txt``. Links to them are relative to the HTML, so
they work from the job folder on disk and through the service's artifact routes
(``/v1/jobs/{id}/artifacts/report/downloads/<name>.zip``) alike.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

from pi_opt.formatting import fmt_int, fmt_pct
from pi_opt.report.schema import ParetoReport

DOWNLOADS = "downloads"
ARTIFACT_FILES = ("model.json", "weights.safetensors")
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


def how_to_load(name: str, summary: str) -> str:
    """The note shipped in every zip: what the model is and three ways to use it."""
    return f"""pi-opt model: {summary}

Unzip, then:

  Python (rebuilds the reduced network bit for bit; pickle is never used):
      from pi_opt.artifacts import load_artifact
      art = load_artifact("{name}")     # the folder from this zip
      model = art.model.eval()          # torch.nn.Module, input [N, C, H, W]
      print(art.manifest.profile.relus, "ReLUs per sample")

  Count ReLUs / polynomial mults / MACs per site:
      pi-opt count {name}

  Encrypted inference under CrypTen 2PC (needs pip install 'pi-opt[mpc]'):
      pi-opt mpc demo {name}
      pi-opt mpc measure {name}
"""


def _artifact_dir(job_dir: Path, artifact: str | None) -> Path | None:
    if not artifact or not _SAFE.match(artifact) or ".." in artifact.split("/"):
        return None
    folder = job_dir / artifact
    return folder if all((folder / f).is_file() for f in ARTIFACT_FILES) else None


def _write_zip(target: Path, folder: Path, name: str, note: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        # weights are already dense float tensors: storing is as small as deflating
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for f in ARTIFACT_FILES:
                zf.write(folder / f, f"{name}/{f}")
            zf.writestr(f"{name}/HOW_TO_LOAD.txt", note)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_downloads(report: ParetoReport, outdir: Path, job_dir: Path) -> dict[str, str]:
    """Zip the baseline and every front point whose artifact exists under ``job_dir``.

    Returns ``{"baseline" | "trial-N": href}`` with hrefs relative to ``outdir`` (where
    ``report.html`` lives). Points without an artifact folder get no entry. Raises
    OSError when ``outdir`` is not writable.
    """
    targets: list[tuple[str, str | None, str]] = [
        ("baseline", report.baseline.artifact,
         f"all-ReLU baseline, {fmt_int(report.baseline.relus)} ReLUs, "
         f"test accuracy {fmt_pct(report.baseline.test_accuracy)}")]
    for p in report.front():
        targets.append((f"trial-{p.trial}", p.artifact,
                        f"trial {p.trial} ({'+'.join(p.chain)}), {fmt_int(p.relus)} ReLUs, "
                        f"test accuracy {fmt_pct(p.test_accuracy)}"))
    hrefs: dict[str, str] = {}
    for name, artifact, summary in targets:
        folder = _artifact_dir(job_dir, artifact)
        if folder is None:
            continue
        _write_zip(outdir / DOWNLOADS / f"{name}.zip", folder, name,
                   how_to_load(name, summary))
        hrefs[name] = f"{DOWNLOADS}/{name}.zip"
    return hrefs
