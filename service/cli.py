"""Command line: ``serve``, ``worker``, ``keys`` and ``openapi`` subcommands.

``add_commands(subparsers)`` adds them to the ``pi-opt`` CLI (composed in :mod:`pi_opt_cli`);
``python -m service ...`` is ``pi-opt ...``.
Options override ``PI_OPT_*`` environment variables.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="jobs, uploads and the SQLite database (PI_OPT_DATA_DIR)")
    p.add_argument("--database-url", help="sqlite:///... or postgresql+psycopg://... "
                   "(PI_OPT_DATABASE_URL)")
    p.add_argument("--executor", choices=["local", "procrastinate"],
                   help="local (embedded) or procrastinate (PostgreSQL scale-out)")
    p.add_argument("--log-level", default=None, help="debug, info, warning, ...")


def add_commands(subparsers: Any) -> None:
    """Add ``serve``, ``worker``, ``keys`` and ``openapi`` to an argparse subparsers object."""
    serve = subparsers.add_parser("serve", help="run the REST API (embedded worker by default)")
    _common(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--no-worker", action="store_true",
                       help="do not run jobs in the API process (use `pi-opt worker`)")
    serve.set_defaults(func=cmd_serve)

    worker = subparsers.add_parser("worker", help="run jobs (local supervisor or "
                                   "procrastinate worker, after --executor)")
    _common(worker)
    worker.add_argument("--concurrency", type=int, help="local executor: parallel jobs")
    worker.set_defaults(func=cmd_worker)

    spec = subparsers.add_parser("openapi", help="print the OpenAPI document (JSON)")
    spec.add_argument("--out", help="write to this file instead of stdout")
    spec.add_argument("--write", action="store_true", help="regenerate the committed "
                      "service/job_spec.schema.json and service/openapi.json")
    spec.set_defaults(func=cmd_openapi)

    keys = subparsers.add_parser("keys", help="manage API keys (create | list | revoke)")
    _common(keys)
    sub = keys.add_subparsers(dest="keys_cmd", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", default="cli", help="a label for the key")
    create.add_argument("--expires-in", metavar="DURATION", type=_duration,
                        help="valid for this long: 3600s, 90m, 12h, 30d (default: no expiry)")
    sub.add_parser("list", help="list keys (id, name, prefix, state, expiry)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", help="id printed by `pi-opt keys create` / `list`")
    keys.set_defaults(func=cmd_keys)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """``90m`` -> 5400.0 seconds (units s, m, h, d; a bare number is seconds)."""
    value, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(value) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600s, 90m, 12h, "
                                         "30d)") from None
    if not 0 < seconds < 1e10:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from service.settings import Settings

    overrides = {k: v for k, v in {
        "data_dir": args.data_dir, "database_url": args.database_url,
        "executor": args.executor, "log_level": args.log_level, **extra}.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        from pi_opt.console import ConfigFileError, validation_lines

        raise ConfigFileError(validation_lines(exc, "settings", Settings)) from None


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    """``pi-opt serve``: the HTTP API under uvicorn (embedded worker unless ``--no-worker``)."""
    import uvicorn

    from service.app import create_app

    settings = _settings(args, host=args.host, port=args.port,
                         embedded_worker=False if args.no_worker else None)
    _logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=30)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """``pi-opt worker``: run queued jobs (local supervisor or procrastinate) until a signal."""
    from service.app import prepare_database

    settings = _settings(args, max_concurrent_jobs=args.concurrency)
    _logging(settings.log_level)
    db = prepare_database(settings)
    if settings.executor == "procrastinate":
        from service.executor.procrastinate_exec import run_worker

        run_worker(settings, db)
        return 0
    from service.executor.local import Supervisor

    sup = Supervisor(settings, db)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sup.stop())
    thread = threading.Thread(target=sup.run, name="pi-opt-supervisor")
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    return 0


def openapi_document() -> str:
    """The API's OpenAPI document as committed in ``service/openapi.json``."""
    import json
    import tempfile

    from service.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        doc = create_app(Settings(data_dir=tmp)).openapi()
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    """``pi-opt openapi``: print the OpenAPI document, or write it (``--out`` / ``--write``)."""
    from service.openapi import write_job_spec_schema

    if args.write:
        write_job_spec_schema()
        args.out = args.out or str(Path(__file__).resolve().parent / "openapi.json")
    text = openapi_document()
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """``pi-opt keys create|list|revoke``: manage API keys; ``--expires-in`` is in seconds."""
    from service.app import prepare_database
    from service.auth import create_api_key, list_api_keys, revoke_api_key
    from service.db import utcnow

    settings = _settings(args)
    db = prepare_database(settings)
    if args.keys_cmd == "create":
        expires = utcnow() + timedelta(seconds=args.expires_in) if args.expires_in else None
        principal, secret = create_api_key(db, args.name, expires_at=expires)
        until = f"\texpires {expires.isoformat(timespec='seconds')}" if expires else ""
        print(f"{principal.id}\t{secret}{until}")
    elif args.keys_cmd == "list":
        now = utcnow()
        for k in list_api_keys(db):
            state = ("revoked" if k.revoked_at else
                     "expired" if k.expires_at and k.expires_at <= now else "active")
            until = k.expires_at.isoformat(timespec="seconds") if k.expires_at else "never"
            print(f"{k.id}\t{k.name}\t{k.prefix}...\t{state}\texpires {until}")
    elif not revoke_api_key(db, args.key_id):
        print(f"error: no active key {args.key_id}", file=sys.stderr)
        return 1
    return 0
