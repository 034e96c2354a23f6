"""``facesvc serve`` (the HTTP service) and ``facesvc openapi`` (its schema, no models)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from facesvc.cli._support import configured_cipher
from facesvc.settings import Settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default from settings)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default FACESVC_WORKERS, else one per usable CPU core, at "
            "most 8; one on a GPU); with FACESVC_DEVICE=gpu, worker i takes GPU i mod n",
        ),
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Apply database migrations before starting")
    ] = False,
) -> None:
    """Start the HTTP service (Swagger UI at /docs)."""
    import uvicorn

    from facesvc.inference.devices import default_workers, worker_plan
    from facesvc.observability.logs import logging_config

    settings = Settings()
    configured_cipher(settings)  # refuse now, with a clear message, rather than in each worker
    if migrate:
        from facesvc.db.migrate import upgrade

        upgrade(settings.database_url)
    plan = worker_plan(
        workers or settings.workers,
        settings.inference_threads,
        default=default_workers(settings.device),
    )
    workers = plan.workers
    # Every worker builds its settings from the environment: it learns how many share the
    # cores, and so how many threads its models may use (workers x threads <= cores).
    os.environ["FACESVC_WORKERS"] = str(workers)
    settings = settings.model_copy(update={"workers": workers})
    typer.echo(
        f"facesvc: {workers} worker(s) x {plan.threads} thread(s) per model on "
        f"{plan.cores} usable core(s)",
        err=True,
    )
    if workers > 1:
        # the workers share one socket: none may accept a request before its models are loaded
        os.environ["FACESVC_STARTUP_WAIT_FOR_MODELS"] = "true"
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_level": settings.log_level,
        "log_config": logging_config(settings.log_level),  # JSON lines, with request ids
        "access_log": False,  # replaced by the request middleware's own line
        "proxy_headers": True,
    }
    if workers > 1 and settings.balance_connections:
        _serve_balanced(_app_target(settings, workers), workers, options)
        return
    uvicorn.run(
        _app_target(settings, workers),
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        **options,
    )


def _serve_balanced(target: str, workers: int, options: dict[str, Any]) -> None:
    """uvicorn's workers on one socket that gives each new connection to the worker holding
    the fewest (cli/listener.py says why). What ``uvicorn.run`` does for ``workers > 1``, with
    that socket, on asyncio's event loop (uvloop accepts in libuv, past the balancing)."""
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    from facesvc.cli.listener import BalancedListener, ConnectionLedger

    config = Config(target, factory=True, workers=workers, loop="asyncio", **options)
    ledger = ConnectionLedger.create()
    try:
        listener = BalancedListener.around(config.bind_socket(), ledger)
        Multiprocess(config, sockets=[listener]).run()
    except KeyboardInterrupt:
        pass
    finally:
        ledger.close()


def _app_target(settings: Settings, workers: int) -> Any:
    """The app for one worker; with several, the factory each process calls to build its own
    app (and models) from the environment."""
    if workers > 1:
        return "facesvc.app:create_app"
    from facesvc.app import create_app

    return create_app(settings)


def openapi(
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Print (or write) the OpenAPI schema without loading models."""
    import json

    from facesvc.app import create_app

    schema = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=False) + "\n"
    if output:
        output.write_text(schema, encoding="utf-8")
    else:
        sys.stdout.write(schema)
