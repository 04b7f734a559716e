"""Lazy public names for the subpackages (PEP 562): `import esi.data` must not import torch or llama-index.

    __getattr__, __dir__ = lazy_exports(__name__, {"read_ecg": "esi.data.reader", "ptbxl": "esi.data.ptbxl"})

A name that is the last part of its module's path ("ptbxl" -> esi.data.ptbxl) is the module itself; any other
name is the attribute of that module.
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, public: dict[str, str]):
    """The module-level `__getattr__` and `__dir__` serving `public` (name -> module path) for `package`."""
    names = sorted(public)

    def __getattr__(name: str):
        module_name = public.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = module if module_name.endswith("." + name) else getattr(module, name)
        setattr(sys.modules[package], name, value)   # cache: later look-ups skip __getattr__
        return value

    def __dir__():
        return names

    return __getattr__, __dir__
