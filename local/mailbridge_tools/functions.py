"""Loading a function's handler module as Lambda does.

Standard library only: the cold-start benchmark and the import guard load handlers with it
in a fresh interpreter, where anything imported here would be counted against the handler.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

_LOADING = threading.Lock()


def load_function_module(
    function: str, code_uri: Path, handler: str, instance: int = 0
) -> ModuleType:
    """A function's handler module, imported as Lambda would import it; each `instance` of
    the function has its own load of it (its app, and the stores the module builds). The
    layer's modules are imported once and shared by every instance (clients, caches, the
    logger), which on Lambda each instance has to itself."""
    module_path = handler.rpartition(".")[0]
    source = code_uri / f"{module_path.replace('.', '/')}.py"
    # Every function's module is app.py: a name per function keeps them apart.
    module_name = f"mailbridge_fn_{function}" + (f"_{instance}" if instance else "")
    # One import per function, even when a request and the OpenAPI document ask at once.
    with _LOADING:
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {source}")
        module = importlib.util.module_from_spec(spec)
        # Registered so that the module's own types resolve (pydantic, dataclasses).
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
