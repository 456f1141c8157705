"""Service configuration (environment variables ``PI_OPT_*`` or keyword arguments)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the API process and the workers need to agree on.

    ``database_url`` defaults to SQLite in ``data_dir``; a ``postgresql+psycopg://`` URL
    together with ``executor="procrastinate"`` is the scale-out mode. Intervals are seconds.
    """

    model_config = SettingsConfigDict(env_prefix="PI_OPT_", extra="forbid")

    data_dir: Path = Path(".pi-opt")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    executor: Literal["local", "procrastinate"] = "local"
    embedded_worker: bool = True          # local executor: run the job supervisor in the API
    max_concurrent_jobs: int = Field(1, ge=1)
    fanout: int = Field(2, ge=1)          # procrastinate: trial tasks per job
    max_upload_bytes: int = Field(1 << 30, ge=1)
    max_extract_bytes: int = Field(4 << 30, ge=1)
    heartbeat_interval_s: float = Field(2.0, gt=0)
    stale_after_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0)
    cancel_grace_s: float = Field(10.0, ge=0)   # cooperative stop before SIGTERM
    kill_grace_s: float = Field(5.0, ge=0)      # SIGTERM before SIGKILL
    max_attempts: int = Field(3, ge=1)
    idempotency_ttl_s: float = Field(24 * 3600, gt=0)
    sse_keepalive_s: float = Field(15.0, gt=0)
    demo_timeout_s: float = Field(600.0, gt=0)
    demo_concurrency: int = Field(1, ge=1)
    bootstrap_key: bool = True            # create + print an API key when none exists
    # ---- job bounds, checked before a job is queued (422 naming the field and the limit)
    max_trials: int = Field(200, ge=1)                 # spec.n_trials (and its default)
    max_epochs: int = Field(200, ge=0)                 # baseline / finetune epochs, each
    max_job_seconds: float = Field(24 * 3600, gt=0)    # wall clock per job; also spec.timeout_s
    max_model_params: int = Field(60_000_000, ge=1)
    max_model_macs: int = Field(50_000_000_000, ge=1)  # per sample
    max_activation_bytes: int = Field(16 << 30, ge=1)  # activations at the training batch
    max_input_elements: int = Field(3 * 512 * 512, ge=1)   # C x H x W of input_shape
    # ---- per-key quotas (429 + Retry-After, or 413)
    quota_active_jobs: int = Field(4, ge=1)            # queued + running + cancelling
    quota_upload_bytes: int = Field(8 << 30, ge=1)     # stored uploads (extracted size)
    quota_artifact_bytes: int = Field(8 << 30, ge=1)   # job directories
    max_extract_ratio: float = Field(50.0, ge=1)       # extracted bytes / archive bytes
    max_recoveries: int = Field(10, ge=1)              # server crashes survived by one job
    runner_nice: int = Field(10, ge=0, le=19)          # job runners yield the CPU to the API
    helper_processes: int = Field(2, ge=1)             # spec / data-set validation pool
    auth_cache_s: float = Field(5.0, ge=0)             # a revoked key works <= this long; 0: off
    log_level: str = "info"

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'pi-opt.db'}"
        if self.database_url.startswith(("postgres://", "postgresql://")):
            self.database_url = "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        if self.executor == "procrastinate" and not self.is_postgres:
            raise ValueError("executor 'procrastinate' needs a postgresql+psycopg:// database_url")
        if self.stale_after_s <= self.heartbeat_interval_s:
            raise ValueError("stale_after_s must be larger than heartbeat_interval_s")
        return self

    @property
    def url(self) -> str:
        """The database URL (default: the SQLite file ``data_dir/pi-opt.db``)."""
        assert self.database_url is not None
        return self.database_url

    @property
    def is_postgres(self) -> bool:
        """True for a PostgreSQL database URL."""
        return self.url.startswith("postgresql")

    @property
    def jobs_dir(self) -> Path:
        """Folder of the job folders (``data_dir/jobs``)."""
        return self.data_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        """Folder of the uploads (``data_dir/uploads``)."""
        return self.data_dir / "uploads"

    def job_dir(self, job_id: str) -> Path:
        """Folder of job ``job_id``."""
        return self.jobs_dir / job_id
