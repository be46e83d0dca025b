"""The ``sgl-gen`` command line (console script ``sgl-gen = "generator.cli:main"``).

:func:`main` is the click group; each command module registers its commands on it:
``compile`` (validate, plan, render, schema), ``local`` (up --local), ``imports`` (import,
export), ``deploy`` (the SSH commands, and ``down`` in both forms), ``hostcheck``
(``check``, over deploy's SSH options) and ``suggest`` (a layout from AIConfigurator's
performance model). What they share, the
topology options and the one error boundary, is in ``common``. No module of this package imports
this one, and nothing outside the package imports the package.
"""

from __future__ import annotations

import click

from generator.cli import compile as compile_commands
from generator.cli import deploy, hostcheck, imports, local, suggest
from generator.errors import EXIT_INVALID


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgl-gen")
def main() -> None:
    """Compile an SGLang serving topology into launch artifacts."""


for _module in (compile_commands, local, imports, deploy, hostcheck, suggest):
    _module.register(main)

#: under every command's --help (the README's "Exit codes" table has the details)
EXIT_CODES = ("Exit codes: 0 success (warnings on stderr); 1 invalid input; 2 usage error; "
              "3 a failure on a host or of the Slurm job; 130 interrupted (Ctrl-C). "
              "See the README's \"Exit codes\".")


def _epilogs(group: click.Group) -> None:
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _epilogs(cmd)
        elif not cmd.epilog:
            cmd.epilog = EXIT_CODES


_epilogs(main)

__all__ = ["main", "EXIT_INVALID"]
