"""Which engine modules load: the mypyc-compiled copies built by ``scripts/build_native.py``
when they match the sources, else the pure-Python modules (the reference, and the default).

Imported first by the package, before any engine: when compiled copies are present but stale
(a source changed since they were built) or ``TUNER_PURE_PYTHON=1`` is set, the pure-Python
sources are loaded explicitly, so a compiled file never runs code other than the source's.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: The compiled engines, in import order (``scripts/build_native.py`` builds the same list).
MODULES = ("_engine", "_fast_engine", "_prefix_engine")


def _compiled_present() -> bool:
    return any((_HERE / f"_engine{s}").exists() for s in importlib.machinery.EXTENSION_SUFFIXES)


def _compiled_current() -> bool:
    try:
        built = json.loads((_HERE / "_native.json").read_text())
    except (OSError, ValueError):
        return False
    return all(
        built.get(m) == hashlib.sha1((_HERE / f"{m}.py").read_bytes()).hexdigest() for m in MODULES
    )


def _load_pure() -> None:
    for m in MODULES:
        name = f"{__package__}.{m}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, _HERE / f"{m}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name} from its source")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def _choose() -> bool:
    if not _compiled_present():
        return False
    if os.environ.get("TUNER_PURE_PYTHON") == "1":
        _load_pure()
        return False
    if not _compiled_current():
        warnings.warn(
            "tuner: the compiled simulator engines are stale (a source changed since "
            "`make native`); using the pure-Python engines. Run `make native` again, or "
            "`make clean-native`.",
            RuntimeWarning,
            stacklevel=2,
        )
        _load_pure()
        return False
    return True


#: Whether the compiled engines are in use.
COMPILED = _choose()
