"""pi-opt service: REST job API over the search engine (FastAPI, ``/v1``).

Embedded by default (SQLite + an in-process supervisor); scaled out on PostgreSQL with
procrastinate workers. Entry points: ``create_app(settings)``, ``pi-opt serve`` /
``pi-opt worker`` (``service.cli.add_commands``), ``python -m service serve``.
Attributes are imported lazily so that job processes importing ``service.jobrunner``
do not pay for FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    if name == "Settings":
        from service.settings import Settings

        return Settings
    raise AttributeError(name)
