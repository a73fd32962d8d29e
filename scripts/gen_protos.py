"""Regenerate the committed protobuf/gRPC stubs from proto/.

Run: python scripts/gen_protos.py        (or --check to fail when the committed stubs differ)

The native API's stubs go to the provider's distribution (`plangate.protocol`, in
clients/python); the flagd evaluation stubs go to the sidecar's (`plangate.sidecar.protocol`),
since an application may load openfeature-provider-flagd, whose own stubs register the same
protobuf names (design §21). protoc writes absolute imports (`from plangate.v1 import
plangate_pb2`); they are rewritten to relative ones.
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
# .proto file -> the folder its stubs are written under (keeping the proto's own sub-path)
FILES = {
    "plangate/v1/plangate.proto": ROOT / "clients" / "python" / "plangate" / "protocol",
    "flagd/evaluation/v1/evaluation.proto": ROOT / "sidecar" / "protocol",
    "flagd/evaluation/v2/evaluation.proto": ROOT / "sidecar" / "protocol",
}
_IMPORT = re.compile(r"^from ((?:plangate|flagd)[\w.]*) import (\w+_pb2)", re.M)


def generate(into: Path) -> dict[Path, str]:
    """Every stub, keyed by its committed path."""
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
    for proto, target in FILES.items():
        folder = Path(proto).parent
        for path in sorted((into / folder).glob("*.py*")):
            text = _IMPORT.sub(lambda m: f"from . import {m.group(2)}", path.read_text())
            out[target / folder / path.name] = text
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
        path for path, text in generated.items() if not path.exists() or path.read_text() != text
    ]
    if check:
        for path in stale:
            rel = path.relative_to(ROOT)
            print(f"stale generated stub: {rel} (run: python scripts/gen_protos.py)")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
