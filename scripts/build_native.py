"""Compile the simulator's engines with mypyc, in place (optional: the pure-Python modules stay
the reference and are used whenever no compiled copy matches them).

Run: ``make native`` (or ``python scripts/build_native.py`` in a venv with the dev extras: mypy
ships mypyc; a C compiler and the Python headers are needed). ``make clean-native`` removes the
compiled files. The compiled engines are the same source, so they give the same schedules and
times to the bit (``tests/test_native.py`` checks them against the pure-Python modules).

``tuner/backends/simulator/_native.json`` records the hash of each compiled source; when a source
changes afterwards, the package loads the pure-Python modules instead (with a warning) until
this is run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tuner" / "backends" / "simulator"
#: The engines, in import order (a compiled class may only subclass a compiled class).
MODULES = ("_engine", "_fast_engine", "_prefix_engine")
RECORD = PACKAGE / "_native.json"


def source_hashes() -> dict[str, str]:
    return {m: hashlib.sha1((PACKAGE / f"{m}.py").read_bytes()).hexdigest() for m in MODULES}


def clean() -> None:
    for p in PACKAGE.glob("*.so"):
        p.unlink()
    RECORD.unlink(missing_ok=True)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    clean()
    os.chdir(ROOT)
    paths = [str(Path("tuner/backends/simulator") / f"{m}.py") for m in MODULES]
    extensions = mypycify(paths, group_name="tuner.backends.simulator._native", opt_level="3")
    # A Distribution of its own: setup() would read this project's pyproject.toml, which older
    # setuptools in an existing venv cannot parse (and nothing else of it is needed here).
    dist = Distribution({"name": "tuner-native", "ext_modules": extensions})
    dist.script_args = ["build_ext", "--inplace"]
    dist.parse_command_line()
    dist.run_commands()
    RECORD.write_text(json.dumps(source_hashes(), indent=1) + "\n")
    print(f"compiled {', '.join(MODULES)} into {PACKAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    clean() if sys.argv[1:] == ["clean"] else build()
