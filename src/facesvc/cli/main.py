"""The root ``facesvc`` command: registers every command group.

Each group's module imports only typer and the settings at import time; the rest loads
inside its commands, so `facesvc --help` and `facesvc openapi` never load TensorFlow.
"""

from __future__ import annotations

import typer

from facesvc.cli.bench import bench_app
from facesvc.cli.db import db_app
from facesvc.cli.enrol import enrol, reembed
from facesvc.cli.eval import eval_app
from facesvc.cli.gallery import gallery_app
from facesvc.cli.keys import keys_app
from facesvc.cli.models import models_app
from facesvc.cli.serve import openapi, serve
from facesvc.cli.users import users_app

app = typer.Typer(
    help="facesvc: face detection, landmarks, embeddings, verification and identification.",
    no_args_is_help=True,
    add_completion=False,
)
for command in (serve, enrol, reembed, openapi):
    app.command()(command)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")  # API keys, data keys, rotate-data
app.add_typer(gallery_app, name="gallery")  # pgvector-fill
app.add_typer(eval_app, name="eval")  # facesvc eval lfw | identify | landmarks | detect | ...
app.add_typer(bench_app, name="bench")  # facesvc bench list | run NAME [-- ARGS]


def main() -> None:
    app()
