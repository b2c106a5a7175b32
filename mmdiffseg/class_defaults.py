"""The keyword defaults of a class's constructor, as its config would fill them."""
from __future__ import annotations

import inspect
from typing import Any, Dict


def init_defaults(cls: type) -> Dict[str, Any]:
    """Name -> default of every ``__init__`` parameter that has one, along the MRO (a subclass's
    default wins; mmseg datasets pass most settings to their base through ``**kwargs``)."""
    defaults: Dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None or klass is object:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults.setdefault(name, param.default)
    return defaults
