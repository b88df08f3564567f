"""Local emulations of what SageMaker does around a model, writing what SageMaker writes through `engine.formats`:
a batch transform (``capture-engine transform``: ``.out`` objects, inference IDs, capture manifests) and capture
for self-hosted endpoints (`engine.capture`).

Names are imported on first use, so a model server that only captures does not import the batch transform.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from engine.emulate.batch_transform import TransformFailed, TransformReport, TransformUnavailable, run_transform
    from engine.emulate.jsonpath import JsonPath, PathError, parse_path
    from engine.emulate.model import CallableModel, HttpModel, InvocationError, Model, open_model
    from engine.emulate.options import TransformOptions

_LAZY = {
    "TransformFailed": "engine.emulate.batch_transform",
    "TransformReport": "engine.emulate.batch_transform",
    "TransformUnavailable": "engine.emulate.batch_transform",
    "run_transform": "engine.emulate.batch_transform",
    "JsonPath": "engine.emulate.jsonpath",
    "PathError": "engine.emulate.jsonpath",
    "parse_path": "engine.emulate.jsonpath",
    "CallableModel": "engine.emulate.model",
    "HttpModel": "engine.emulate.model",
    "InvocationError": "engine.emulate.model",
    "Model": "engine.emulate.model",
    "open_model": "engine.emulate.model",
    "TransformOptions": "engine.emulate.options",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.emulate' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CallableModel",
    "HttpModel",
    "InvocationError",
    "JsonPath",
    "Model",
    "PathError",
    "TransformFailed",
    "TransformOptions",
    "TransformReport",
    "TransformUnavailable",
    "open_model",
    "parse_path",
    "run_transform",
]
