"""Request and response schemas (table models never leave the service layer)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.problems import Problem

#: A ``pi_opt.search.SearchConfig`` document with upload references (schema: JobSpec,
#: see ``service.openapi``); validated in a helper process, stored exactly as submitted.
JobSpecDoc = Annotated[dict[str, Any], WithJsonSchema(
    {"allOf": [{"$ref": "#/components/schemas/JobSpec"}]})]
T = TypeVar("T")

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "canceled"]

_EXAMPLE_SPEC: dict[str, Any] = {
    "title": "digits demo",
    "data": {"kind": "digits", "max_train": 400},
    "model": {"arch": {"name": "resnet_mini", "kwargs": {"widths": [4, 8, 16]}},
              "input_shape": [1, 8, 8], "num_classes": 10},
    "baseline": {"epochs": 2},
    "finetune": {"epochs": 1},
    "techniques": ["deepreduce"],
    "budgets": [0.5],
    "n_trials": 2,
}


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobCreate(BaseModel):
    """A job submission.

    ``spec`` is a ``pi_opt.search.SearchConfig`` document. Instead of file paths it
    references uploads: ``"data": {"upload_id": "upl_...", "max_train": 1000}`` (other
    DatasetSpec fields allowed; the kind comes from the upload) and
    ``"model": {"upload_id": "upl_..."}`` (architecture spec + safetensors weights).
    """

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"spec": _EXAMPLE_SPEC}]})
    spec: JobSpecDoc


class PlanPublic(BaseModel):
    """A job's plan (``pi_opt.plan.JobPlan`` as JSON: parameters, MACs, activation memory,
    trials, epochs; no timing) after the same validation and limits as a submission."""

    title: str
    plan: dict[str, Any]


class Progress(BaseModel):
    """Progress of a job: phase, finished and planned trials, best point so far, epoch."""
    phase: str | None = None
    trials_done: int = 0
    trials_total: int | None = None
    best_so_far: dict[str, Any] | None = None
    epoch: dict[str, Any] | None = None


class JobPublic(_Out):
    """A job as the API returns it."""
    id: str
    status: JobStatus
    title: str
    attempt: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    error: Problem | None
    result: dict[str, Any] | None
    spec: JobSpecDoc
    links: dict[str, str]


class Page(BaseModel, Generic[T]):
    """One keyset page, newest first; pass ``next_cursor`` back as ``cursor``."""

    data: list[T]
    next_cursor: str | None


JobsPage = Page[JobPublic]


class EventPublic(BaseModel):
    """One job event (also sent on the SSE stream)."""
    id: int = Field(description="per-job sequence number; the SSE `id`")
    type: str
    attempt: int
    created_at: datetime
    data: dict[str, Any]


class UploadPublic(_Out):
    """An uploaded dataset or model; `size` in bytes."""
    id: str
    kind: Literal["dataset", "model"]
    status: Literal["awaiting_spec", "ready"]
    format: str | None
    filename: str
    size: int
    sha256: str
    created_at: datetime
    meta: dict[str, Any]
    links: dict[str, str]


UploadsPage = Page[UploadPublic]


class ArtifactPublic(BaseModel):
    """A downloadable file of a job; `size` in bytes."""
    name: str = Field(description="path relative to the job directory, e.g. report/pareto.json")
    media_type: str
    size: int
    sha256: str
    pareto_point: int | None = Field(None, description="trial number for points/trial-<n>/*")
    href: str


class ArtifactList(BaseModel):
    """The files of a job."""
    data: list[ArtifactPublic]


class DemoCreate(BaseModel):
    """Which front point (trial number or ``"best"``: highest validation accuracy) and which
    test-split sample to classify under MPC."""

    model_config = ConfigDict(extra="forbid")
    trial: int | Literal["best"] = "best"
    index: int = Field(0, ge=0)


class DemoPublic(_Out):
    """An encrypted-inference demo of one front point on one test image."""
    id: str
    job_id: str
    trial: int
    index: int
    status: Literal["queued", "running", "succeeded", "failed"]
    result: dict[str, Any] | None
    error: Problem | None
    created_at: datetime
    finished_at: datetime | None
    links: dict[str, str]


class Health(BaseModel):
    """Liveness; the other fields only for a request with a valid API key."""

    status: Literal["ok"]
    version: str | None = None
    executor: str | None = None
    database: str | None = None
    time: datetime | None = None
