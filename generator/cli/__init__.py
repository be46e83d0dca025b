"""The ``sgl-gen`` command line (console script ``sgl-gen = "generator.cli:main"``).

:func:`main` is the click group; each command module registers its commands on it:
``compile`` (validate, plan, render, schema), ``local`` (up --local), ``imports`` (import,
export), ``deploy`` (the SSH commands, and ``down`` in both forms) and ``hostcheck``
(``check``, over deploy's SSH options). What they share, the
topology options and the one error boundary, is in ``common``. No module of this package imports
this one, and nothing outside the package imports the package.
"""

from __future__ import annotations

import click

from generator.cli import compile as compile_commands
from generator.cli import deploy, hostcheck, imports, local
from generator.errors import EXIT_INVALID


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgl-gen")
def main() -> None:
    """Compile an SGLang serving topology into launch artifacts."""


for _module in (compile_commands, local, imports, deploy, hostcheck):
    _module.register(main)

__all__ = ["main", "EXIT_INVALID"]
