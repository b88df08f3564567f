"""The objects of a transform job: the inputs it lists, the ``.out`` objects it writes, its capture manifests.

Input (reference 5.2, formats reference 4.1): an ``S3Prefix`` is a key-name prefix (every object whose key
starts with it; a local folder is taken as a folder, a local file as that file); a ``ManifestFile`` lists
``prefix + rel`` objects. An output is named after the input's key relative to the input prefix's folder,
plus ``.out`` (SageMaker's local mode's rule; the service's own for nested keys is unclear). Each ``.out`` is
written under ``{output}/_temporary/{job}/`` and moved to its name when complete.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import engine.formats.batch_transform as wire
from engine.emulate.options import TransformOptions
from engine.errors import SourceError
from engine.io.storage import Location, open_location, translate_errors

__all__ = ["InputObject", "OutputObject", "list_manifest", "list_prefix", "write_capture"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputObject:
    """One input object of the job."""

    path: str  # in the input filesystem
    uri: str
    manifest_rel: str  # relative to the input manifest's prefix
    out_rel: str  # the .out object, relative to the output root


def _folder(prefix: str) -> str:
    return prefix[: prefix.rfind("/") + 1]


def list_prefix(loc: Location, source: str) -> tuple[str, list[InputObject]]:
    """The objects of an S3Prefix (key-name prefix; a local folder or file is taken as such)."""
    root = loc.root
    with translate_errors(source):
        if loc.is_local and loc.fs.isfile(root):
            paths, prefix = [root], root
        else:
            local_dir = loc.is_local and loc.fs.isdir(root)
            prefix = root + "/" if local_dir or source.endswith("/") else root
            parent = prefix.rstrip("/") if local_dir or prefix.endswith("/") else posixpath.dirname(prefix)
            found = loc.fs.find(parent) if parent and loc.fs.exists(parent) else []
            paths = sorted(p for p in found if p.startswith(prefix) and not p.endswith("/"))
    if not paths:
        raise SourceError("no input objects under the transform input prefix", uri=source)
    folder = _folder(prefix)
    inputs = [InputObject(p, loc.uri(p), p[len(prefix) :], wire.output_name(p[len(folder) :])) for p in paths]
    return loc.uri(prefix), inputs


def list_manifest(source: str, options: TransformOptions) -> tuple[Location, str, list[InputObject], str]:
    """The objects a ManifestFile lists: each is ``prefix + relative key``."""
    mloc = open_location(source, options.storage_options)
    with translate_errors(source):
        data = mloc.fs.cat_file(mloc.root)
    try:
        prefix, rels = wire.parse_manifest_document(data)
    except ValueError as exc:
        raise SourceError(f"not a ManifestFile ({exc})", uri=source) from None
    if not rels:
        raise SourceError("the ManifestFile lists no objects", uri=source)
    loc = open_location(prefix, options.storage_options)
    folder = _folder(prefix)
    inputs = []
    for rel in rels:
        uri = prefix + rel  # plain concatenation, as SageMaker resolves manifests
        path = loc.fs._strip_protocol(uri)
        inputs.append(InputObject(path, loc.uri(path), rel, wire.output_name(uri[len(folder) :])))
    return loc, prefix, inputs, prefix


class OutputObject:
    """One ``.out`` object, written under a temporary name and moved to its own when complete."""

    def __init__(self, loc: Location, job_id: str, rel: str) -> None:
        self.loc, self.final = loc, loc.join(rel)
        self.tmp = loc.join("_temporary", job_id, rel)
        self.handle: Any = None
        self.size = 0

    def write(self, data: bytes) -> None:
        with translate_errors(self.loc.uri(self.tmp), sink=True):
            if self.handle is None:
                self.loc.fs.makedirs(posixpath.dirname(self.tmp), exist_ok=True)
                self.handle = self.loc.fs.open(self.tmp, "wb")
            self.handle.write(data)
        self.size += len(data)

    def commit(self) -> str:
        self.write(b"")  # an empty object still gets its (empty) .out
        with translate_errors(self.loc.uri(self.final), sink=True):
            self.handle.close()
            self.loc.fs.makedirs(posixpath.dirname(self.final), exist_ok=True)
            self.loc.fs.mv(self.tmp, self.final)
        return self.loc.uri(self.final)

    def abort(self) -> None:
        try:
            if self.handle is not None:
                try:
                    self.handle.discard()  # s3fs: abort the multipart upload, so no part is ever committed
                except (AttributeError, RuntimeError):  # a local file: closed, then removed below
                    self.handle.close()
            if self.loc.fs.exists(self.tmp):
                self.loc.fs.rm(self.tmp)
        except OSError as exc:  # the temporary folder is removed at the end anyway
            logger.debug("could not remove %s: %s", self.tmp, exc)


def write_capture(
    options: TransformOptions,
    start: datetime,
    in_prefix: str,
    inputs: list[InputObject],
    dest: str,
) -> list[str]:
    """The input and output manifests, listing every object of the job (failed ones too, as SageMaker knows
    its files when it starts: a reader then finds a listed ``.out`` missing)."""
    assert options.capture is not None
    cap = open_location(options.capture, options.storage_options)
    out_loc = open_location(dest, options.storage_options)
    out_prefix = out_loc.uri(out_loc.root).rstrip("/") + "/"
    documents = {
        "input": wire.manifest_document(in_prefix, [i.manifest_rel for i in inputs]),
        "output": wire.manifest_document(out_prefix, [i.out_rel for i in inputs]),
    }
    uris: list[str] = []
    for side, doc in documents.items():
        path = cap.join(wire.capture_manifest_key(side, start, str(uuid.uuid4())))
        tmp = path + ".tmp"
        with translate_errors(cap.uri(path), sink=True):
            cap.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            cap.fs.pipe_file(tmp, doc)
            cap.fs.mv(tmp, path)
        uris.append(cap.uri(path))
    return uris
