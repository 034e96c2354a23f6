"""The ``facesvc`` console script: one module per command group, registered in ``main``."""

from facesvc.cli.main import app, main

__all__ = ["app", "main"]
