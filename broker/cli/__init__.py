"""The ``broker`` and ``kubectl mcp`` command lines (typer + rich): options in, core out."""

from broker.cli.app import app, main, make_app

__all__ = ["app", "main", "make_app"]
