"""Where the P4 tools are: PATH first, then /opt/p4/bin (where the project's toolchain
installer puts them). Users bring their own p4c and BMv2 (p4lang packages or images)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PREFIXES = (Path("/opt/p4/bin"),)
P4INCLUDE = (Path("/opt/p4/share/p4c/p4include"),)


def find(tool: str) -> Path | None:
    """The executable `tool` (`p4c-bm2-ss`, `simple_switch_grpc`), or None."""
    found = shutil.which(tool)
    if found is not None:
        return Path(found)
    for prefix in PREFIXES:
        candidate = prefix / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing(*tools: str) -> str | None:
    """None when every tool is there, else a sentence that names the missing ones."""
    absent = [t for t in tools if find(t) is None]
    if not absent:
        return None
    return (
        f"P4 toolchain: {', '.join(absent)} not found on PATH or in /opt/p4/bin "
        "(scripts/setup installs it from ../shared/p4-toolchain; see p4/README.md)"
    )
