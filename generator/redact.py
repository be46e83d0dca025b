"""Redaction of credentials in log text that sgl-gen prints (a failed deploy's log tail,
``sgl-gen logs``, a failed Slurm job's output): the rendered scripts pass ``--api-key "${NAME}"``
and SGLang logs its ``server_args`` at start, so a log line can hold a secret the topology never
contained.

A name is a credential by the one rule the topology uses
(:func:`generator.compile.credentials.is_credential_name`), in every form a log writes it:
``--api-key X`` / ``--api-key=X``, ``api_key='X'`` / ``api_key=b'X'``
(Python reprs), ``"api_key": "X"`` (JSON), ``x-api-key: X`` (headers, YAML), ``HF_TOKEN=X``
(environment), a list value (``control_plane_api_keys=['k1', 'k2']``: every item). Besides names:
``Authorization: <scheme> X`` and ``Bearer X``, and a URL's user info (``postgres://u:X@db``,
``https://X@host``). Only the value is replaced, by ``***``; the name stays, so a reader still
sees which setting was given.

This file also runs on its own, next to a Slurm job (``python3 redact.py --tail 30 LOG``): the
sbatch prints a failed unit's log tail through it. generator/targets/slurm.py ships it with the
credential rule bundled in place of the import below, so the job redacts exactly as sgl-gen does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from generator.compile.credentials import is_credential_name  # sgl-gen: credential rule

MASK = "***"

#: a name followed by its separator: ``--name `` / ``--name=``, ``name=``, ``name: ``, quoted
#: names (``'name': ``, ``"name"=``). The name is the last dotted part (``args.api_key``).
_NAME = re.compile(
    r"(?<![\w-])(?P<q>['\"]?)(?P<dash>--)?(?P<name>[A-Za-z_][A-Za-z0-9_-]*)(?P=q)"
    r"(?P<sep>\s*[=:]\s*|(?<=[A-Za-z0-9_])\s+)")
#: values that say "not set": never a secret, and shown so a reader sees the setting is off
_UNSET = frozenset({"None", "null", "none", "True", "False", "true", "false", "~"})
#: a bare value: up to whitespace, a quote or a bracket; a trailing ``,`` / ``;`` separates
_BARE = re.compile(r"[^\s'\"()\[\]{}]+")
#: ``Authorization: Bearer X`` and ``Proxy-Authorization``: the scheme word stays
_AUTH_NAMES = frozenset({"authorization", "proxy_authorization"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9-]*[ \t]+(?=[^\s'\"])")
#: ``Bearer X`` anywhere (curl -H, a header dump)
_BEARER = re.compile(r"(?P<name>\bBearer)(?P<sep>\s+)(?P<value>[A-Za-z0-9._~+/=-]+)",
                     re.IGNORECASE)
#: ``scheme://USERINFO@``: ``user:password`` keeps the user, ``token`` alone is all secret
#: (a scheme starts after a non-scheme character: a long run of letters is tried once, not at
#: every one of its letters)
_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s'\"]*)@")


def _is_secret(name: str) -> bool:
    return is_credential_name(name) or name.lower().replace("-", "_") in _AUTH_NAMES


def _quoted_end(line: str, i: int) -> int:
    """The index after the string literal that opens at ``line[i]`` (a quote), or the line's
    end when it is not closed (a cut line: everything after the quote is the value)."""
    quote = line[i]
    j = i + 1
    while j < len(line):
        if line[j] == "\\":
            j += 2
            continue
        if line[j] == quote:
            return j + 1
        j += 1
    return len(line)


def _mask_string(line: str, i: int) -> tuple[str, int]:
    """A string literal at ``line[i]`` (``'x'``, ``"x"``, ``b'x'``) masked, and where it ends."""
    prefix = ""
    if line[i] in "bBrRuU" and line[i + 1:i + 2] in ("'", '"'):
        prefix, i = line[i], i + 1
    end = _quoted_end(line, i)
    closed = end <= len(line) and end - i >= 2 and line[end - 1] == line[i]
    return prefix + line[i] + MASK + (line[i] if closed else ""), end


def _mask_bare(line: str, i: int) -> tuple[str, int] | None:
    m = _BARE.match(line, i)
    if not m:
        return None
    token = m.group().rstrip(",;")
    if not token or token in _UNSET:
        return None
    return MASK, i + len(token)


def _mask_container(line: str, i: int) -> tuple[str, int]:
    """A list, tuple or set at ``line[i]``: every item masked, the brackets and commas kept."""
    close = {"[": "]", "(": ")", "{": "}"}[line[i]]
    out = [line[i]]
    j = i + 1
    while j < len(line) and line[j] != close:
        c = line[j]
        if c in "'\"" or (c in "bBrRuU" and line[j + 1:j + 2] in ("'", '"')):
            text, j = _mask_string(line, j)
            out.append(text)
        elif c.isspace() or c in ",:":
            out.append(c)
            j += 1
        else:
            bare = _mask_bare(line, j)
            if bare is None:
                m = _BARE.match(line, j)  # None, null, or a stray character: kept
                k = j + max(len(m.group().rstrip(",;")) if m else 0, 1)
                out.append(line[j:k])
                j = k
            else:
                out.append(bare[0])
                j = bare[1]
    if j < len(line):
        out.append(close)
        j += 1
    return "".join(out), j


def _mask_value(line: str, i: int, name: str, flag_words: bool) -> tuple[str, int] | None:
    """The value that starts at ``line[i]`` masked, and where it ends; None when there is no
    value to mask (``api_key=None``). ``flag_words``: ``--name v1 v2`` (space-separated), every
    word up to the next flag-shaped word is a value (``--control-plane-api-keys k1 k2``)."""
    if i >= len(line):
        return None
    c = line[i]
    if c in "'\"" or (c in "bBrRuU" and line[i + 1:i + 2] in ("'", '"')):
        return _mask_string(line, i)
    if c in "[({":
        return _mask_container(line, i)
    if name.lower().replace("-", "_") in _AUTH_NAMES:
        scheme = _SCHEME.match(line, i)
        if scheme:  # Authorization: Bearer X -> the scheme stays
            rest = _mask_bare(line, scheme.end())
            if rest:
                return scheme.group() + rest[0], rest[1]
    if flag_words:
        parts: list[str] = []
        j = i
        while j < len(line):
            if line[j] in "-\\" or line[j] in "'\"" and parts:
                break
            word = _mask_value(line, j, name, False)
            if word is None:
                break
            parts.append(word[0])
            j = word[1]
            gap = re.match(r"[ \t]+", line[j:])
            if not gap or j + gap.end() >= len(line) or line[j + gap.end()] in "-\\":
                break
            parts.append(gap.group())
            j += gap.end()
        return ("".join(parts), j) if parts else None
    return _mask_bare(line, i)


def _mask_names(line: str, secret: Callable[[str], bool]) -> str:
    out: list[str] = []
    pos = 0
    search = 0
    while True:
        m = _NAME.search(line, search)
        if not m:
            break
        spaced = not m.group("sep").strip()
        # "name value" is prose: only --flag VALUE counts; a name that is no credential may be
        # followed by more names (server_args=ServerArgs(api_key=...)): search on after it
        if spaced and not m.group("dash") or not secret(m.group("name")):
            search = m.end("name")
            continue
        masked = _mask_value(line, m.end(), m.group("name"), spaced)
        if masked is None:
            search = m.end()
            continue
        out.append(line[pos:m.end()])
        out.append(masked[0])
        pos = search = masked[1]
    out.append(line[pos:])
    return "".join(out)


def _mask_userinfo(m: re.Match[str]) -> str:
    info = m.group("info")
    if not info:
        return m.group()
    user, colon, _ = info.partition(":")
    return f"{m.group('scheme')}{user}{colon}{MASK}@" if colon else f"{m.group('scheme')}{MASK}@"


def redact(line: str) -> str:
    """``line`` with the value of every credential it holds replaced by ``***``."""
    line = _USERINFO.sub(_mask_userinfo, line)
    line = _mask_names(line, _is_secret)
    return _BEARER.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", line)


def redact_lines(lines: list[str]) -> list[str]:
    return [redact(x) for x in lines]


def main(argv: list[str]) -> int:
    """``redact.py [--tail N] [FILE...]``: FILE's last N lines (all without --tail; stdin without
    FILE) redacted. Everything is read and redacted before anything is written, so a failure
    prints no unredacted line."""
    tail = 0
    if argv[:1] == ["--tail"] and len(argv) >= 2:
        tail, argv = int(argv[1]), argv[2:]
    chunks: list[str] = []
    sources = argv or ["-"]
    for src in sources:
        if src == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(src, "rb") as f:
                data = f.read()
        lines = data.decode("utf-8", "replace").splitlines()
        chunks.extend(redact_lines(lines[-tail:] if tail else lines))
    sys.stdout.write("".join(x + "\n" for x in chunks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
