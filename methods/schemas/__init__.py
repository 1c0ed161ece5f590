"""The methods' params classes (their config schemas) and registry entries, torch-free.

Importing this package registers every method: the built-ins in a fixed order (the order of the table, the config and
the CLI), then any other module in this folder, alphabetically. ``common`` and ``train`` hold shared field types.
"""

import importlib
import pkgutil

BUILTIN = ("gatys", "adain", "contrastive", "ghiasi")
_SHARED = ("common", "train")

for _name in [*BUILTIN, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in (*BUILTIN, *_SHARED))]:
    importlib.import_module(f"{__name__}.{_name}")
