"""Regenerate the gRPC code in this folder from ../proto: ``python -m mboard.api.generate``.

grpc_tools writes absolute imports (``import razpravljalnica_pb2``); we rewrite them to
relative ones so the generated modules live inside the ``mboard.api`` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
API_DIR = Path(__file__).resolve().parent
PROTOS = ("razpravljalnica.proto", "cluster.proto")
_ABSOLUTE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def generate(out_dir: Path = API_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc over the project's protos into ``out_dir``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(proto_dir / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}")
    written = []
    for name in PROTOS:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = out_dir / f"{stem}{suffix}"
            path.write_text(_ABSOLUTE_IMPORT.sub(r"from . import \1 as \2", path.read_text()))
            written.append(path)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else API_DIR):
        print(path)
