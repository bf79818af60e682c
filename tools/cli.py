"""The ``recsys`` command: one CLI for every process type and tool.

Commands import their implementation lazily, so ``recsys status`` does not load torch or Spark.
Implementations live with their service (e.g. ``services.als.cli``) or in ``tools``; this file only wires them.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.processes import CONSUMERS, HTTP_SERVICES, WORKERS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recsys: event-driven product recommender")
db_app = typer.Typer(no_args_is_help=True, help="database commands")
app.add_typer(db_app, name="db")

def _call(target: str, **kwargs: Any) -> Any:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(**kwargs)


def _exit(code: int | None) -> None:
    if code:
        raise typer.Exit(code)


@app.command()
def up() -> None:
    """Start the local stack (broker, migrations, services, workers) in the background."""
    _exit(_call("tools.stack:up"))


@app.command()
def down() -> None:
    """Stop the local stack."""
    _exit(_call("tools.stack:down"))


@app.command()
def status() -> None:
    """Show each local process: pid, port, health."""
    _exit(_call("tools.stack:status"))


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="synthetic users")] = 300,
    items: Annotated[int, typer.Option(help="synthetic items")] = 400,
    seed: Annotated[int, typer.Option()] = 7,
    show: Annotated[int, typer.Option(help="users to print")] = 3,
    reviews: Annotated[Path | None, typer.Option(help="use this reviews file instead of synth")] = None,
    meta: Annotated[Path | None, typer.Option(help="use this meta file instead of synth")] = None,
) -> None:
    """The main job: up, load data, ingest, train ALS, index, profile, print recommendations."""
    _exit(_call("tools.demo:run_demo", users=users, items=items, seed=seed, show=show,
                reviews=reviews, meta=meta))


@app.command()
def compare(user_id: str, k: Annotated[int, typer.Option()] = 5) -> None:
    """The study's case study: one user's history and every strategy's output side by side."""
    _exit(_call("tools.demo:run_compare", user_id=user_id, k=k))


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="output directory")],
    users: Annotated[int, typer.Option()] = 1000,
    items: Annotated[int, typer.Option()] = 500,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Synthetic data in the Amazon Reviews 2023 schema with planted user tastes."""
    _exit(_call("tools.synth:main", users=users, items=items, seed=seed, out=out))


@app.command()
def ingest(
    reviews: Annotated[Path | None, typer.Option(help="reviews .jsonl or .jsonl.gz")] = None,
    meta: Annotated[Path | None, typer.Option(help="item metadata .jsonl or .jsonl.gz")] = None,
    url: Annotated[str | None, typer.Option(help="ingest service URL")] = None,
    batch_size: Annotated[int, typer.Option()] = 500,
    api_key: Annotated[str | None, typer.Option(envvar="RECSYS_API_KEY")] = None,
) -> None:
    """Stream Amazon Reviews 2023 files into the running stack through the ingest API."""
    _exit(_call("tools.ingest:main", reviews=reviews, meta=meta, url=url, batch_size=batch_size,
                api_key=api_key))


@app.command()
def eda(
    reviews: Annotated[Path, typer.Option()],
    meta: Annotated[Path, typer.Option()],
    out: Annotated[Path, typer.Option()],
) -> None:
    """The study's exploratory data analysis: Markdown report and PNG plots."""
    _exit(_call("tools.eda:main", reviews=reviews, meta=meta, out=out))


@app.command("train-als")
def train_als(
    cv: Annotated[bool, typer.Option("--cv", help="run the cross-validation grid first")] = False,
    implicit: Annotated[bool, typer.Option("--implicit", help="also train the implicit-feedback model")] = False,
    out: Annotated[Path | None, typer.Option(help="where to write the CV table and chart")] = None,
) -> None:
    """Train ALS now on the ratings in the database (optionally cross-validated)."""
    _exit(_call("services.als.cli:train", cv=cv, implicit=implicit, out=out))


@app.command()
def evaluate(
    reviews: Annotated[Path, typer.Option()],
    meta: Annotated[Path, typer.Option()],
    out: Annotated[Path, typer.Option()],
    k: Annotated[int, typer.Option()] = 10,
    strategies: Annotated[str, typer.Option(help="comma-separated; default all")] = "",
    users: Annotated[int, typer.Option(help="evaluate at most N test users (0 = all)")] = 0,
    split: Annotated[str, typer.Option(help="leave-last-out | global-time")] = "leave-last-out",
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Offline evaluation of every strategy on a held-out split; writes metrics.json and report.md."""
    _exit(_call("tools.evaluation.run:main", reviews=reviews, meta=meta, out=out, k=k,
                strategies=[s for s in strategies.split(",") if s], users=users, split=split, seed=seed))


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=", ".join(HTTP_SERVICES))],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int, typer.Option()] = 1,
) -> None:
    """Run one HTTP service (uvicorn)."""
    if service not in HTTP_SERVICES:
        typer.echo(f"unknown service {service!r}; choose from {', '.join(HTTP_SERVICES)}", err=True)
        raise typer.Exit(2)
    import uvicorn

    module, default_port = HTTP_SERVICES[service]
    # Keep-alive longer than the callers' pools keep idle connections (the gateway's: 30 s), so a
    # caller never reuses a connection the server is closing (uvicorn's default is 5 s).
    uvicorn.run(f"{module}:create_app", factory=True, host=host, port=port or default_port, workers=workers,
                log_level="info", access_log=False, timeout_keep_alive=75)


@app.command()
def consume(name: Annotated[str, typer.Argument(help=", ".join(CONSUMERS))]) -> None:
    """Run one Kafka consumer until SIGTERM."""
    if name not in CONSUMERS:
        typer.echo(f"unknown consumer {name!r}; choose from {', '.join(CONSUMERS)}", err=True)
        raise typer.Exit(2)
    from shared.config import get_settings
    from shared.logging import configure_logging

    common = get_settings()
    configure_logging(level=common.LOG_LEVEL, json_lines=common.LOG_JSON)
    _exit(_call(CONSUMERS[name]))  # each consumer reads its own service's settings


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help=", ".join(WORKERS))],
    concurrency: Annotated[int, typer.Option()] = 1,
    beat: Annotated[bool, typer.Option("--beat", help="also run the periodic scheduler (one per cluster)")] = False,
) -> None:
    """Run a Celery worker (profiler and explainer: the LLM, GPU in production; als: Spark driver)."""
    if name not in WORKERS:
        typer.echo(f"unknown worker {name!r}; choose from {', '.join(WORKERS)}", err=True)
        raise typer.Exit(2)
    module, queue = WORKERS[name]
    tasks = importlib.import_module(module)
    celery_app = tasks.celery_app
    queue = ",".join(getattr(tasks, "QUEUES", None) or [queue])  # a module's queues follow its settings
    argv = ["worker", "-Q", queue, "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO",
            "--pool", "solo" if concurrency == 1 else "prefork"]
    if beat:
        # The schedule state lives under RECSYS_HOME, never in the working directory.
        from shared.config import get_settings

        schedule = get_settings().ensure_home() / f"celerybeat-{name}"
        argv += ["-B", "--schedule", str(schedule)]
    celery_app.worker_main(argv)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations up to head."""
    from shared.config import get_settings
    from shared.db import upgrade_database

    settings = get_settings()
    settings.ensure_home()
    upgrade_database(settings.database_url)
    typer.echo("database at head")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
