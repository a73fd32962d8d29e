"""Regenerate the committed protobuf/gRPC stubs under protocol/ from proto/.

Run: python scripts/gen_protos.py        (or --check to fail when the committed stubs differ)

protoc writes absolute imports (`from plangate.v1 import plangate_pb2`); the stubs live in
the `plangate.protocol` package, so those imports are rewritten to relative ones.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "protocol"
FILES = [
    "plangate/v1/plangate.proto",
    "flagd/evaluation/v1/evaluation.proto",
    "flagd/evaluation/v2/evaluation.proto",
]
_IMPORT = re.compile(r"^from ((?:plangate|flagd)[\w.]*) import (\w+_pb2)", re.M)


def generate(into: Path) -> dict[Path, str]:
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
    ]
    if protoc.main([*args, *(str(PROTO / f) for f in FILES)]) != 0:
        raise SystemExit("protoc failed")
    out: dict[Path, str] = {}
    for path in sorted(into.rglob("*.py*")):
        text = _IMPORT.sub(lambda m: f"from . import {m.group(2)}", path.read_text())
        out[path.relative_to(into)] = text
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if committed stubs are stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
    stale = [
        rel
        for rel, text in generated.items()
        if not (OUT / rel).exists() or (OUT / rel).read_text() != text
    ]
    if check:
        for rel in stale:
            print(f"stale generated stub: protocol/{rel} (run: python scripts/gen_protos.py)")
        return 1 if stale else 0
    for rel in stale:
        (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
        (OUT / rel).write_text(generated[rel])
        print(f"wrote protocol/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
