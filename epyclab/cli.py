"""The ``epyclab`` command: inspect notebooks and set up clusters."""

from __future__ import annotations

import click

from epyclab import __version__


@click.group()
@click.version_option(__version__, prog_name="epyclab")
def main() -> None:
    """epyclab: computational experiments over parameter spaces."""
