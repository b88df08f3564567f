"""Local emulators of SageMaker jobs: a batch transform (``capture-engine transform``) that writes what
SageMaker's writes (``.out`` objects, inference IDs, capture manifests) through `engine.formats`."""

from engine.emulate.batch_transform import TransformFailed, TransformReport, TransformUnavailable, run_transform
from engine.emulate.jsonpath import JsonPath, PathError, parse_path
from engine.emulate.model import CallableModel, HttpModel, InvocationError, Model, open_model
from engine.emulate.options import TransformOptions

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
