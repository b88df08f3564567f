"""Manifests: the batch data-capture layout, resolved into the transform files to read.

Batch transform capture writes no data, only manifests (formats reference 3.2):
``{root}/input/yyyy/mm/dd/hh/{uuid}.json`` and ``{root}/output/...``, each one JSON array
``[{"prefix": "s3://..."}, "rel/key", ...]`` whose entries resolve as plain ``prefix + rel`` (the rel
is empty when the prefix is the object itself). The hour folder is the job's start hour.

An output object is named ``<input name>.out``; the input and output manifests of one job are
paired by those names, and each input object with its output.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import orjson

from engine.errors import SourceError
from engine.io.listing import CaptureObject, HourRange, list_capture_objects
from engine.io.storage import Location, translate_errors

__all__ = [
    "ManifestProblem",
    "TransformFile",
    "allowed_roots",
    "list_manifests",
    "pair_manifests",
    "read_manifest",
]

logger = logging.getLogger(__name__)

_MANIFEST_SUFFIXES = (".json", ".jsonl")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest, or one entry of it, that cannot be used: it becomes one reject."""

    manifest: CaptureObject
    entry: int | None  # 1-based position in the array; None: the whole manifest
    reason: str
    detail: str
    raw: bytes


@dataclass(frozen=True)
class Manifest:
    """One parsed manifest: where it is, its hour, and the URIs it lists (in order)."""

    obj: CaptureObject
    side: str  # "input" or "output"
    uris: list[str]


@dataclass(frozen=True)
class TransformFile:
    """One transform input object and its output object, as the manifests name them."""

    manifest: str  # URI of the output manifest (else the input manifest)
    hour: datetime | None  # the job's start hour (the manifests' hour folder)
    input: str | None  # URI; None without an input manifest
    output: str | None  # URI; None without an output manifest


def list_manifests(
    loc: Location, *, hours: HourRange | None, concurrency: int
) -> tuple[list[CaptureObject], list[CaptureObject]]:
    """The input and output manifests under a batch capture root, only in the hour prefixes of `hours`.

    A root that is itself one manifest (a ``ManifestFile`` transform input) is read as an input manifest.
    """
    with translate_errors(loc.uri(loc.root)):
        is_file = loc.fs.isfile(loc.root)
    if is_file:
        info = loc.fs.info(loc.root)
        return [CaptureObject(loc.root, loc.uri(loc.root), int(info.get("size") or 0), None, None, None)], []
    sides: list[list[CaptureObject]] = []
    for side in ("input", "output"):
        sub = Location(loc.fs, loc.join(side), loc.url)
        with translate_errors(sub.uri(sub.root)):
            exists = loc.fs.isdir(sub.root)
        # Some jobs capture only one side; a root with neither is not a batch capture destination.
        found = list_capture_objects(sub, hours=hours, concurrency=concurrency) if exists else []
        sides.append([o for o in found if o.path.endswith(_MANIFEST_SUFFIXES)])
    if not any(sides):
        with translate_errors(loc.uri(loc.root)):
            exists = loc.fs.exists(loc.root)
        if not exists:
            raise SourceError("batch capture source not found", uri=loc.uri(loc.root))
    return sides[0], sides[1]


def _apply_prefix_map(uri: str, prefix_map: Mapping[str, str]) -> str:
    # Longest FROM first, so a specific mapping wins over a general one.
    for src in sorted(prefix_map, key=len, reverse=True):
        if uri.startswith(src):
            return prefix_map[src] + uri[len(src) :]
    return uri


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return "file" if scheme in ("", "file", "local") else scheme


def read_manifest(
    loc: Location, obj: CaptureObject, side: str, *, prefix_map: Mapping[str, str]
) -> tuple[Manifest | None, list[ManifestProblem]]:
    """Parse one manifest; entries that cannot be read safely are problems, the rest are kept."""
    with translate_errors(obj.uri):
        raw = loc.fs.cat_file(obj.path)
    # A UTF-8 BOM (some editors and Windows tools write one) is not part of the JSON, as for capture and labels.
    body = raw.strip()
    body = body[len(_BOM) :].strip() if body.startswith(_BOM) else body
    try:
        doc = orjson.loads(body or b"null")
    except orjson.JSONDecodeError as exc:
        return None, [ManifestProblem(obj, None, "invalid_manifest", f"not JSON: {exc}", raw[:4096])]
    if not isinstance(doc, list):
        return None, [ManifestProblem(obj, None, "invalid_manifest", "not a JSON array", raw[:4096])]
    if not doc or not isinstance(doc[0], dict) or not isinstance(doc[0].get("prefix"), str):
        detail = 'the first element is not {"prefix": "..."}'
        return None, [ManifestProblem(obj, None, "invalid_manifest", detail, raw[:4096])]
    prefix = _apply_prefix_map(doc[0]["prefix"], prefix_map)
    expected = loc.protocol
    roots = allowed_roots(loc, prefix_map)
    uris: list[str] = []
    problems: list[ManifestProblem] = []
    for i, rel in enumerate(doc[1:], start=2):
        entry_raw = orjson.dumps(rel)
        if not isinstance(rel, str):
            problems.append(ManifestProblem(obj, i, "invalid_manifest_entry", "an entry is not a string", entry_raw))
            continue
        uri = prefix + rel  # never insert "/": the prefix may be the object itself with an empty rel
        if _scheme(uri) != expected:
            detail = f"{uri} is not on the source's storage ({expected}); map it with --prefix-map FROM=TO"
            problems.append(ManifestProblem(obj, i, "unexpected_scheme", detail, entry_raw))
            continue
        if expected == "file" and _escapes(prefix, rel):
            detail = f"{rel!r} escapes the manifest prefix {prefix}"
            problems.append(ManifestProblem(obj, i, "key_escapes_prefix", detail, entry_raw))
            continue
        path = loc.fs._strip_protocol(uri)
        if not _under(path, roots, local=expected == "file"):
            allowed = ", ".join(loc.uri(r) for r in roots)
            detail = f"{uri} is outside the allowed roots ({allowed}); allow it with --prefix-map"
            problems.append(ManifestProblem(obj, i, "outside_allowed_root", detail, entry_raw))
            continue
        # Full URIs for provenance (a local manifest may list plain paths).
        uris.append(loc.uri(path))
    return Manifest(obj, side, uris), problems


def allowed_roots(loc: Location, prefix_map: Mapping[str, str]) -> list[str]:
    """Where the objects a manifest names may be: the source's own storage area, and --prefix-map targets.

    Manifests come from outside, so they must not steer the run to other data. By default: on S3 (and
    other object stores) the source's bucket; on a filesystem the folder that holds the batch capture
    root (where SageMaker's layout puts the transform input and output beside it). Each --prefix-map
    target is allowed too (it is the user's own statement of where the objects are).
    """
    root = loc.root.rstrip("/")
    local = loc.protocol == "file"
    roots = [posixpath.dirname(posixpath.normpath(root)) or "/" if local else root.split("/", 1)[0]]
    for target in prefix_map.values():
        if _scheme(target) == loc.protocol:
            roots.append(loc.fs._strip_protocol(target).rstrip("/") or "/")  # noqa: PERF401
    return roots


def _under(path: str, roots: Sequence[str], *, local: bool) -> bool:
    if local:
        path = posixpath.normpath(path)
    return any(root == "/" or path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _escapes(prefix: str, rel: str) -> bool:
    """On a filesystem `..` and absolute keys leave the prefix (on S3 they are just characters)."""
    if rel.startswith("/") or "\\" in rel:
        return True
    base = urlsplit(prefix).path if "://" in prefix else prefix
    joined = posixpath.normpath(base + rel) if rel else posixpath.normpath(base)
    root = posixpath.normpath(base if base.endswith("/") else posixpath.dirname(base) or "/")
    return not (joined == root or joined.startswith(root.rstrip("/") + "/"))


_OUT = re.compile(r"\.out$")


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def pair_manifests(inputs: Sequence[Manifest], outputs: Sequence[Manifest]) -> list[TransformFile]:
    """Pair input and output manifests of the same hour by their object names, then objects by name.

    An output manifest goes with the input manifest of its hour that shares the most names
    (``x.csv`` with ``x.csv.out``); manifests without a partner are read on their own side only.
    """
    files: list[TransformFile] = []
    used: set[int] = set()
    for out in outputs:
        names = {_OUT.sub("", _name(u)) for u in out.uris}
        best, best_overlap = None, 0
        for k, inp in enumerate(inputs):
            if k in used or inp.obj.hour != out.obj.hour:
                continue
            overlap = len(names & {_name(u) for u in inp.uris})
            if overlap > best_overlap:
                best, best_overlap = k, overlap
        by_name: dict[str, str] = {}
        if best is not None:
            used.add(best)
            by_name = {_name(u): u for u in inputs[best].uris}
        files.extend(
            TransformFile(out.obj.uri, out.obj.hour, by_name.pop(_OUT.sub("", _name(uri)), None), uri)
            for uri in out.uris
        )
        # Inputs the output manifest does not list (no output was captured for them) are read alone.
        files += [TransformFile(out.obj.uri, out.obj.hour, u, None) for u in by_name.values()]
    for k, inp in enumerate(inputs):
        if k not in used:
            files += [TransformFile(inp.obj.uri, inp.obj.hour, u, None) for u in inp.uris]
    return files
