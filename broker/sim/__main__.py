"""``python -m broker.sim --nodes 5``: the ``broker sim`` command on its own."""

from __future__ import annotations

import typer

from .cli import sim


def main() -> None:
    typer.run(sim)


if __name__ == "__main__":
    main()
