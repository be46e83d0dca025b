"""The text of ``MANIFEST.sha256``: the one format, produced by render (the last artifact) and
read back by write.py (which files in a directory are sgl-gen's) and deploy (OUT_DIR)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from generator.targets.common import Artifact

MANIFEST = "MANIFEST.sha256"
#: the first line of every manifest sgl-gen writes: what makes the directory sgl-gen's
MANIFEST_HEADER = ("# sgl-gen manifest 1 (sha256sum -c compatible): the files sgl-gen wrote "
                   "here")


def manifest_text(artifacts: Mapping[str, Artifact]) -> str:
    """``MANIFEST.sha256`` for ``artifacts`` (every file but the manifest itself), as render
    writes it."""
    return MANIFEST_HEADER + "\n" + "".join(
        f"{hashlib.sha256(a.content.encode('utf-8')).hexdigest()}  {path}\n"
        for path, a in sorted(artifacts.items()) if path != MANIFEST)
