"""The ``inferline`` command line (typer + rich)."""

from inferline.cli._app import app, main

__all__ = ["app", "main"]
