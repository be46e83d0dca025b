"""Error types. Exceptions carry messages; only the CLI prints them.

Exit codes (documented in the README):
  0  success
  1  invalid input (validation, placement, stale output with --check)
  2  usage error (bad CLI options)  -- click's own convention
  3  deploy/runtime failure on a host
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_DEPLOY = 3
#: at most this many diagnostics are printed; the rest are counted ("... and K more errors")
MAX_SHOWN = 100


#: characters a message must not print raw: they would split one diagnostic over several lines
#: (LF, CR, U+0085, U+2028, U+2029), drive the terminal (ESC, other C0/C1 controls) or reorder
#: the line (bidi controls), or cannot be encoded at all (a lone surrogate: a byte of a file
#: name or argument that is not UTF-8, which Python decodes as U+DC80-U+DCFF; printing it raw
#: is a UnicodeEncodeError). A value echoed in a message shows them as escapes instead.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                        "\ufeff\ufffe\uffff\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """``text`` with every character ``_INVISIBLE`` matches written as an escape, and the
    user name and password of every URL in it written as ``***``."""
    return mask_userinfo(_INVISIBLE.sub(lambda m: _ESCAPES.get(m.group()) or (
        f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"),
        text))


#: what a credential shows as in every message, log tail and artifact
MASK = "***"


#: a URL with userinfo (``postgres://user:pw@db``, ``redis://:pw@cache``, ``https://TOKEN@host``):
#: the one detection rule, for refusing such a URL (compile/credentials.py) and for masking it here
URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@")


def mask_userinfo(text: str) -> str:
    """``text`` with the user name and password of every URL in it written as ``***``
    (``postgres://***@db``): the message still names the host. The detection rule is
    :data:`URL_USERINFO`, the one validation refuses such a URL by."""
    return URL_USERINFO.sub(lambda m: m.group().split("://", 1)[0] + f"://{MASK}@", text)


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
        """One line, always: characters that would break it or drive a terminal are escaped."""
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.severity == "warning":
            text = f"{where}: warning: {self.path}: {self.message}" if self.path else (
                f"{where}: warning: {self.message}")
        if self.hint:
            text += f" (hint: {self.hint})"
        return visible(text)


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
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per diagnostic, at most ``MAX_SHOWN`` of them: a file with 100,000 bad
        items gets the first ones and a count, not 100,000 lines (the rest are in
        ``diagnostics``)."""
        shown = self.diagnostics[:MAX_SHOWN]
        out = [d.format() for d in shown]
        rest = self.diagnostics[MAX_SHOWN:]
        if rest:
            first = rest[0]
            errors = sum(d.severity == "error" for d in rest)
            warnings = len(rest) - errors
            counts = " and ".join(
                f"{n:,} more {word}{'s' if n != 1 else ''}"
                for n, word in ((errors, "error"), (warnings, "warning")) if n)
            out.append(Diagnostic(first.file, first.line, first.col, "",
                                  f"... and {counts} from here on (only the first "
                                  f"{MAX_SHOWN} are listed)").format())
        return out


class DeployError(SglGenError):
    exit_code = EXIT_DEPLOY
