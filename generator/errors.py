"""Error types. Exceptions carry messages; only the CLI prints them.

Exit codes (documented in the README):
  0  success
  1  invalid input (validation, placement, stale output with --check)
  2  usage error (bad CLI options)  -- click's own convention
  3  deploy/runtime failure on a host
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_DEPLOY = 3


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One positioned problem: ``file:line:col: path: message``.

    ``line``/``col`` are 1-based; 0 means "no position" (e.g. a CLI option).
    ``path`` is the dotted/indexed topology path, e.g. ``sglang[0].server_groups[1].num_gpus``.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    hint: str = ""
    severity: str = "error"  # "error" | "warning"

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.severity == "warning":
            text = f"{where}: warning: {self.path}: {self.message}" if self.path else (
                f"{where}: warning: {self.message}")
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class SglGenError(Exception):
    """An expected failure: printed short by the CLI, never with a traceback."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def lines(self) -> list[str]:
        return [self.message]


class TopologyError(SglGenError):
    """One or more positioned diagnostics; all of a file's errors at once, sorted by position."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.col, d.path, d.message))
        super().__init__("\n".join(d.format() for d in self.diagnostics))

    def lines(self) -> list[str]:
        return [d.format() for d in self.diagnostics]


class DeployError(SglGenError):
    exit_code = EXIT_DEPLOY
