"""The naive design: every module of the layer imported, provider adapters included, as a
handler that imported the whole package up front would. Imported by the benchmark's probe."""

import importlib
import pkgutil

import mailbridge

for module in pkgutil.walk_packages(mailbridge.__path__, "mailbridge."):
    importlib.import_module(module.name)
