"""Write the table of `plangate serve` options into docs/operating.md from `sidecar/settings.py`.

Run: python scripts/gen_settings_doc.py        (or --check to fail when the docs differ)

The table sits between `<!-- settings:start -->` and `<!-- settings:end -->`; the prose
around it is the docs' own and is left as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plangate.sidecar.settings import markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "operating.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def rendered(text: str) -> str:
    """`text` with the table between the markers replaced by the declared one."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{DOC}: the markers {START} and {END} are missing")
    return f"{head}{START}\n{markdown_table()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the docs are out of date")
    check = parser.parse_args(argv).check
    current = DOC.read_text()
    wanted = rendered(current)
    if current == wanted:
        return 0
    if check:
        print(f"{DOC} is out of date: run python scripts/gen_settings_doc.py", file=sys.stderr)
        return 1
    DOC.write_text(wanted)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
