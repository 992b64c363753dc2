"""tierroute: route each LLM query to the cheapest model tier that answers it correctly."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

__version__ = "0.1.0"


def lazy_door(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A wing door's `__getattr__` (PEP 562) that imports a name's module on first use.

    `exports` maps each submodule of `package` to the names the door hands on. A door that
    imported them all eagerly would make every module of the wing pay for the whole wing at
    import: `tierroute route` would load the gRPC server, and `tierroute rollback`
    onnxruntime. Each door also imports the names under TYPE_CHECKING for the type checker.
    """
    where = {name: f"{package}.{module}" for module, names in exports.items() for name in names}

    def door_getattr(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return door_getattr
