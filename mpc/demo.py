"""Encrypted-inference demo: the client encrypts one image, the server holds the model,
and only the client decrypts the prediction.

:func:`run_demo` is the API the service calls; :func:`default_image` picks a test
image from a pi_opt data set, re-normalized to the artifact's ``mean``/``std``.
"""

from __future__ import annotations

import pickle
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpc.config import MpcConfig
from mpc.latency_model import plan_link_estimates
from mpc.launcher import run_parties
from mpc.party import Job, ModelJob, backend_name, party_main, resolve_device
from mpc.lowering import lower
from mpc.results import DemoResult
from pi_opt.artifacts import load_artifact, read_manifest
from pi_opt.data import DatasetSpec, load_dataset
from pi_opt.errors import DatasetError, ShapeMismatchError


def default_image(artifact_dir: str | Path, *, index: int = 0,
                  dataset: DatasetSpec | None = None) -> tuple[Tensor, int]:
    """Test image ``index`` of ``dataset`` (digits by default) as ``([C, H, W], label)``.

    The data set is normalized with its own train statistics; when the artifact's
    spec records ``mean``/``std`` the image is re-normalized to those.
    """
    spec = read_manifest(artifact_dir).spec
    bundle = load_dataset(dataset or DatasetSpec())
    x, y = bundle.test.tensors
    if not 0 <= index < len(y):
        raise DatasetError(f"index {index} out of range: the test split has {len(y)} images")
    img = x[index].clone()
    if tuple(img.shape) != tuple(spec.input_shape):
        raise ShapeMismatchError(
            f"data set images are {tuple(img.shape)}, the model expects {spec.input_shape}")
    if spec.mean is not None and spec.std is not None:
        view = (-1, 1, 1)
        raw = img * torch.tensor(bundle.std).view(view) + torch.tensor(bundle.mean).view(view)
        img = (raw - torch.tensor(spec.mean).view(view)) / torch.tensor(spec.std).view(view)
    return img, int(y[index])


def run_demo(artifact_dir: str | Path, image: Tensor, *,
             config: MpcConfig | None = None) -> DemoResult:
    """Classify ``image`` (``[C, H, W]``, normalized for the model) under 2PC encryption.

    The client party (0) encrypts the image and is the only one to decrypt the logits
    (``reveal(dst=client)``, decoded exactly); the server party (1) holds the model.
    ``config.warmup`` untimed inferences of the same image run first; the reported
    latency, rounds and bytes are those of the final inference.
    """
    cfg = config or MpcConfig()
    backend = backend_name()
    art = load_artifact(artifact_dir)
    spec = art.manifest.spec
    shape = tuple(spec.input_shape)
    x = image.float()
    if x.dim() == len(shape) + 1 and x.shape[0] == 1:
        x = x[0]
    if tuple(x.shape) != shape:
        raise ShapeMismatchError(f"image has shape {tuple(x.shape)}, the model expects {shape}")
    plan = lower(art.model, shape, num_classes=spec.num_classes)
    with torch.no_grad():
        ref = art.model(x[None]).double()[0]
    public = plan.public_view() if cfg.weights == "private" else plan
    device = resolve_device(cfg.device)
    common: dict[str, Any] = dict(weights=cfg.weights, device=device, repeats=1, warmup=cfg.warmup,
                  batch_size=1)
    client = Job([ModelJob(pickle.dumps(public), 0, None, x[None].contiguous())], **common)
    server = Job([ModelJob(pickle.dumps(plan), 0, None, None)], **common)
    res = run_parties(party_main, [client, server], provider=cfg.provider, device=device,
                      threads=cfg.threads, timeout_s=cfg.timeout_s, link=cfg.link)[0][0]
    logits = res["timed_logits"][0]
    pred, plain_pred = int(logits.argmax()), int(ref.argmax())
    latency = statistics.median(res["latencies"])
    rounds = int(res["rounds"][-1])
    sent = int(res["crypten_bytes"][-1]) // 2
    est = plan_link_estimates(cfg, plan, latency_s=latency, rounds=rounds, bytes_sent=sent)
    names = spec.class_names
    return DemoResult(
        prediction=pred, class_name=names[pred] if names and pred < len(names) else None,
        plaintext_prediction=plain_pred, agrees=pred == plain_pred,
        logits=[float(v) for v in logits], plaintext_logits=[float(v) for v in ref],
        max_logit_error=float((logits - ref).abs().max()), latency_s=latency,
        rounds=rounds, bytes_per_party=sent,
        estimated_lan_s=est["lan"], estimated_wan_s=est["wan"],
        backend=backend, provider=cfg.provider, device=device, weights=cfg.weights,
    )


__all__ = ["default_image", "run_demo"]
