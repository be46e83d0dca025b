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

import importlib

import click

from generator.errors import EXIT_INVALID

#: every command -> the module of this package that registers it (with its siblings); a
#: command's module is imported when the command is looked up, so ``validate`` never loads the
#: SSH commands' options, and --help (which lists them all) loads nothing but this package
COMMANDS = {"validate": "compile", "plan": "compile", "render": "compile", "schema": "compile",
            "up": "local", "import": "imports", "export": "imports", "deploy": "deploy",
            "diff": "deploy", "status": "deploy", "logs": "deploy", "down": "deploy",
            "restart": "deploy", "check": "hostcheck", "suggest": "suggest"}


class _Commands(click.Group):
    """The group whose commands come from their modules on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"generator.cli.{COMMANDS[cmd_name]}").register(self)
            _epilogs(self)
        return self.commands.get(cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgl-gen")
def main() -> None:
    """Compile an SGLang serving topology into launch artifacts."""


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


__all__ = ["COMMANDS", "EXIT_INVALID", "main"]
