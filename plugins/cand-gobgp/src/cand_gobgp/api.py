"""Import point for GoBGP's generated stubs (flat imports, so their directory goes on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

_GEN = Path(__file__).parent / "_generated"
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

try:
    import attribute_pb2 as attr_pb
    import gobgp_pb2 as pb
    import gobgp_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    raise ImportError(
        "GoBGP's gRPC stubs are missing: run scripts/setup (it generates them from Debian's "
        "golang-github-osrg-gobgp-dev .proto files)"
    ) from e

__all__ = ["attr_pb", "pb", "pb_grpc"]
