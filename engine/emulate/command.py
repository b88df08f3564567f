"""The ``transform`` command of the CLI: a local batch transform job."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from engine.arguments import storage_options

__all__ = ["add_commands"]

Handler = Callable[[argparse.Namespace], int]
_MB = re.compile(r"(?i)\s*(\d+)\s*(?:mb|mib)?\s*")


def _megabytes(text: str) -> int:
    m = _MB.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected whole megabytes such as 6 or 6MB, got {text!r}")
    return int(m.group(1))


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _cmd_transform(args: argparse.Namespace) -> int:
    # Imported here so that the other commands start without the emulator's modules.
    from engine.emulate.batch_transform import TransformFailed, run_transform
    from engine.emulate.options import TransformOptions
    from engine.options import parse_time

    options = TransformOptions(
        content_type=args.content_type,
        accept=args.accept,
        split_type=args.split_type,
        batch_strategy=args.batch_strategy,
        max_payload_mb=args.max_payload,
        max_concurrent=args.max_concurrent,
        assemble_with=args.assemble_with,
        input_filter=args.input_filter,
        output_filter=args.output_filter,
        join_source=args.join_source,
        generate_inference_id=args.generate_inference_id,
        compression=args.compression,
        manifest=args.manifest,
        capture=args.capture,
        invocations_timeout=args.invocations_timeout,
        max_retries=args.max_retries,
        ping_timeout=args.ping_timeout,
        slice_end=args.slice_end,
        start_time=parse_time(args.start_time) if args.start_time else None,
        storage_options=storage_options(args.storage_option),
    )
    try:
        report = run_transform(args.source, args.dest, args.model, options=options)
    except TransformFailed as exc:
        if not args.quiet:
            print(exc.report.summary())
        raise
    if not args.quiet:
        print(report.summary())
    return 0


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Register ``transform``; returns its handler by command name."""
    tr = sub.add_parser("transform", help="a local batch transform: input objects -> model -> .out (+ capture)")
    tr.add_argument("source", metavar="INPUT", help="S3Prefix (local folder, file, key prefix or URL), or a manifest")
    tr.add_argument("dest", metavar="OUTPUT", help="output root for the .out objects (path or URL)")
    tr.add_argument("--model", required=True, help="http://HOST:PORT (SageMaker's container protocol) or module:fn")
    tr.add_argument("--content-type", help="ContentType of the requests (e.g. text/csv, application/jsonlines)")
    tr.add_argument("--accept", help="Accept of the requests (e.g. text/csv, application/json)")
    tr.add_argument("--split-type", choices=("None", "Line", "RecordIO"), default="None", help="default None")
    tr.add_argument(
        "--batch-strategy", choices=("SingleRecord", "MultiRecord"), help="default: the model's, else Multi"
    )
    tr.add_argument("--max-payload", type=_megabytes, metavar="MB", help="MaxPayloadInMB, 1..100 (default 6)")
    tr.add_argument("--max-concurrent", type=int, metavar="N", help="MaxConcurrentTransforms (default 1)")
    tr.add_argument("--assemble-with", choices=("None", "Line"), default="None", help="default None")
    tr.add_argument("--input-filter", default="$", metavar="JSONPATH", help="e.g. '$[1:]' (default $)")
    tr.add_argument("--output-filter", default="$", metavar="JSONPATH", help="e.g. '$[0]' (default $)")
    tr.add_argument("--join-source", choices=("None", "Input"), default="None", help="default None")
    tr.add_argument("--generate-inference-id", action="store_true", help="append inference ID and time per record")
    tr.add_argument("--capture", metavar="DEST", help="write batch capture manifests under DEST (input/, output/)")
    tr.add_argument("--compression", choices=("None", "Gzip"), default="None", help="input CompressionType")
    tr.add_argument("--manifest", action="store_true", help="INPUT is a ManifestFile ([{prefix}, keys...])")
    tr.add_argument("--invocations-timeout", type=_seconds, default=600.0, metavar="SECONDS", help="default 600")
    tr.add_argument("--max-retries", type=int, default=3, help="InvocationsMaxRetries, 0..3 (default 3)")
    tr.add_argument("--ping-timeout", type=_seconds, default=10.0, metavar="SECONDS", help="wait for /ping (10)")
    tr.add_argument("--slice-end", choices=("inclusive", "exclusive"), default="inclusive", help="filter slices")
    tr.add_argument("--start-time", metavar="T", help="the job's start (inference time, capture hour); default now")
    tr.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", help="fsspec option")
    add_common(tr)
    return {"transform": _cmd_transform}
