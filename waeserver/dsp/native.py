"""The package's C libraries: plain shared libraries that ``pip install`` builds as extension
modules (setup.py) and that Python loads with ctypes, so that nothing but C runs inside them."""

from __future__ import annotations

import ctypes
import importlib.util


def load_library(module: str, what: str, functions: list[tuple[str, object, list]]) -> ctypes.CDLL:
    """The built library of ``module`` (e.g. ``waeserver.live._voices``) with each of ``functions``
    (``(name, restype, argtypes)``) declared; ``ImportError`` naming ``what`` when it is not built."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"waeserver's {what} is not built: pip install -e . (needs a C compiler)")
    lib = ctypes.CDLL(spec.origin)
    for name, res, args in functions:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib
