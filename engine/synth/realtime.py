"""Real-time capture: endpoints, variants and hours of capture objects in SageMaker's key order, plus labels."""

from __future__ import annotations

import base64
import itertools
import logging
import math
from datetime import timedelta
from fractions import Fraction
from typing import Any, NamedTuple

import fsspec
import numpy as np
import orjson
from numpy.typing import NDArray

from engine.formats.capture import (
    CAPTURE_DATA,
    DATA,
    ENCODING,
    ENDPOINT_INPUT,
    ENDPOINT_OUTPUT,
    EVENT_ID,
    EVENT_METADATA,
    EVENT_VERSION,
    EVENT_VERSION_VALUE,
    INFERENCE_ID,
    INFERENCE_TIME,
    MODE,
    MODE_INPUT,
    MODE_OUTPUT,
    OBSERVED_CONTENT_TYPE,
)
from engine.formats.ground_truth import encode_label
from engine.synth.options import (
    _DEFAULT_OPTIONS,
    _MS_PER_HOUR,
    _PILOT_EVENTS,
    _TRAILING_NEWLINE_SHARE,
    ENDPOINT_PREFIX,
    SynthOptions,
    SynthSummary,
    _validate,
)
from engine.synth.output import _LabelSink, _Writer
from engine.synth.text import (
    _CSV,
    _JSON,
    _JSONL,
    _MMSS,
    _churn_pool,
    _csv_layout,
    _json_pool,
    _jsonl_pool,
    _Pool,
    _uuid4s,
)

logger = logging.getLogger(__name__)


def synth(
    dest: str,
    options: SynthOptions = _DEFAULT_OPTIONS,
    *,
    storage_options: dict[str, Any] | None = None,
) -> SynthSummary:
    """Writes a synthetic SageMaker capture tree (and its ground truth) under ``dest``.

    Existing objects under ``dest`` are left alone; objects with the same key are overwritten.

    Args:
        dest: An fsspec URL or local path (``/tmp/x``, ``file:///tmp/x``, ``memory://x``, ``s3://bucket/x``).
        options: What to generate.
        storage_options: Passed to the fsspec filesystem (credentials, endpoint URL, ...).

    Returns:
        Counts of what was written; the same summary (plus the options) is stored as ``{dest}/synth.json``.

    Raises:
        OptionsError: If an option is out of range (a ``ValueError``).
    """
    _validate(options)
    fs, base = fsspec.core.url_to_fs(dest, **(storage_options or {}))
    root = dest.rstrip("/") or dest
    writer = _Writer(fs, base.rstrip("/") or base)
    factory = _EventFactory(options)
    main_seed, pilot_seed, label_seed = np.random.SeedSequence(options.seed).spawn(3)
    rng = np.random.default_rng(main_seed)
    labels = _LabelSink(writer, np.random.default_rng(label_seed), options.start)

    streams = _streams(options)
    unit_weights = [Fraction(1, options.hours) * w for _, _, w in streams] * options.hours
    target = options.target_bytes
    planned = _allocate(options.records, unit_weights) if target is None else []
    # Weight of the units from each one to the last, to share what is left of a byte target.
    weight_left = list(itertools.accumulate(reversed(unit_weights)))[::-1]
    pilot_events, pilot_bytes = (0, 0) if target is None else factory.pilot(np.random.default_rng(pilot_seed))

    events = records = files = capture_bytes = 0
    events_per_hour: dict[str, int] = {}
    unit = 0
    for hour in range(options.hours):
        hour_start = options.start + timedelta(hours=hour)
        hour_key = hour_start.strftime("%Y-%m-%dT%H")
        events_per_hour[hour_key] = 0
        time_prefix = hour_start.strftime("%Y-%m-%dT%H:")
        for endpoint, variant, _ in streams:
            if target is None:
                count = planned[unit]
            else:
                # Re-plan each unit from what is left, so the pilot's estimate error does not accumulate.
                share = float(unit_weights[unit] / weight_left[unit])
                mean = (pilot_bytes + capture_bytes) / (pilot_events + events)
                count = round(max(0, target - capture_bytes) * share / mean)
                if count == 0 and events == 0 and unit == len(unit_weights) - 1:
                    count = 1  # a positive target always yields something to read
            unit += 1
            if count == 0:
                continue
            folder = f"capture/{endpoint}/{variant}/{hour_start:%Y/%m/%d/%H}"
            times, fractional = _event_times(rng, count, options.fractional_time_share)
            for lo in range(0, count, options.records_per_file):
                hi = lo + options.records_per_file
                batch = factory.render(rng, times[lo:hi], fractional[lo:hi], time_prefix)
                first = int(times[lo])
                name = (
                    f"{first // 60_000 % 60:02d}-{first // 1000 % 60:02d}-{first % 1000:03d}-{_uuid4s(rng, 1)[0]}.jsonl"
                )
                writer.write(f"{folder}/{name}", batch.data)
                files += 1
                capture_bytes += len(batch.data)
                events += batch.events
                records += batch.records
                labels.add(hour, batch.labels)
            events_per_hour[hour_key] += count
        # No later inference hour can add labels to collection hours up to this one.
        labels.flush(through_hour=hour)
    labels.flush(through_hour=None)

    summary = SynthSummary(
        root=root,
        capture_root=f"{root}/capture",
        ground_truth_root=f"{root}/ground-truth",
        events=events,
        records=records,
        files=files,
        capture_bytes=capture_bytes,
        labels=labels.lines,
        label_files=labels.files,
        events_per_hour=events_per_hour,
    )
    # Written last: its presence tells a reader the tree is complete.
    writer.write("synth.json", orjson.dumps({**summary.to_dict(), "options": options}, option=orjson.OPT_INDENT_2))
    logger.info(
        "synth wrote %d events (%d records, %d bytes) in %d files and %d labels in %d files under %s",
        events,
        records,
        capture_bytes,
        files,
        summary.labels,
        summary.label_files,
        root,
    )
    return summary


def _streams(o: SynthOptions) -> list[tuple[str, str, Fraction]]:
    """Endpoint/variant pairs with their share of the traffic.

    Variant k gets weight 1/k so AllTraffic is always the busiest; endpoints decay geometrically so they
    differ in volume too. Exact fractions keep the allocation deterministic across platforms.
    """
    pairs = []
    for e in range(o.endpoints):
        for v in range(o.variants):
            variant = "AllTraffic" if v == 0 else f"Variant{v + 1}"
            pairs.append((f"{ENDPOINT_PREFIX}-{e + 1}", variant, Fraction(4, 5) ** e * Fraction(1, v + 1)))
    total = sum((w for _, _, w in pairs), Fraction(0))
    return [(e, v, w / total) for e, v, w in pairs]


def _allocate(total: int, weights: list[Fraction]) -> list[int]:
    """Splits ``total`` into integers proportional to ``weights`` (largest remainder, exact)."""
    raw = [total * w for w in weights]
    counts = [math.floor(r) for r in raw]
    left = total - sum(counts)
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def _event_times(
    rng: np.random.Generator, count: int, fractional_share: float
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Sorted millisecond offsets within an hour and which of them print fractional seconds.

    Events printed without fractions are truncated to the whole second *before* sorting, so the file order and
    the file name (the first event's time) agree with what the lines say.
    """
    ms = rng.integers(0, _MS_PER_HOUR, size=count, dtype=np.int64)
    fractional = rng.random(count) < fractional_share
    ms = np.where(fractional, ms, ms - ms % 1000)
    order = np.argsort(ms, kind="stable")
    return ms[order], fractional[order]


class _Batch(NamedTuple):
    """One rendered capture object and the labels of its events."""

    data: bytes  # JSONL, every line ending in a newline
    events: int
    records: int
    labels: list[tuple[int, str]]  # (delay in hours, ground-truth line)


class _EventFactory:
    """Draws capture events and their labels; holds the run-wide counters that keep ids unique."""

    def __init__(self, options: SynthOptions) -> None:
        self.o = options
        self.numeric, self.groups = _csv_layout(options.features)
        self.inference_ids = 0
        self.json_events = 0

    def pilot(self, rng: np.random.Generator) -> tuple[int, int]:
        """Renders a throw-away sample and returns (events, bytes) to size a ``target_bytes`` run."""
        saved = (self.inference_ids, self.json_events)
        ms, fractional = _event_times(rng, _PILOT_EVENTS, self.o.fractional_time_share)
        size = 0
        for lo in range(0, _PILOT_EVENTS, self.o.records_per_file):
            hi = lo + self.o.records_per_file
            size += len(self.render(rng, ms[lo:hi], fractional[lo:hi], "2000-01-01T00:").data)
        self.inference_ids, self.json_events = saved
        return _PILOT_EVENTS, size

    def _csv_pool(self, rng: np.random.Generator, count: int) -> _Pool:
        """Records of churn CSV bodies: ``features`` columns, float32 probabilities."""
        return _churn_pool(rng, count, self.numeric, self.groups)

    def render(
        self, rng: np.random.Generator, ms: NDArray[np.int64], fractional: NDArray[np.bool_], time_prefix: str
    ) -> _Batch:
        """Draws one capture object with an event per entry of ``ms``.

        Args:
            rng: The run's random generator.
            ms: Sorted millisecond offsets of the events within their hour.
            fractional: Which events print fractional seconds.
            time_prefix: The hour as ``YYYY-MM-DDTHH:``.

        Returns:
            The object's bytes, its event and record counts, and the labels of its labelled events.
        """
        o = self.o
        n = len(ms)
        is_json = rng.random(n) < o.json_share
        # JSON events alternate between the two shapes, run-wide.
        json_rank = np.cumsum(is_json) - 1 + self.json_events
        self.json_events += int(is_json.sum())
        jsonl_shape = json_rank % 2 == 1
        multi = rng.random(n) < o.multi_record_share
        n_records = np.where(multi, rng.integers(2, 6, size=n), 1)
        trailing = rng.random(n) < _TRAILING_NEWLINE_SHARE
        b64 = rng.random(n) < o.base64_share
        has_iid = rng.random(n) < o.inference_id_share
        labelled = rng.random(n) < o.label_share
        delays = rng.integers(0, o.max_label_delay_hours + 1, size=n)
        event_ids = _uuid4s(rng, n)

        kinds = np.where(is_json, np.where(jsonl_shape, _JSONL, _JSON), _CSV)
        counts = [int(n_records[kinds == kind].sum()) for kind in (_CSV, _JSON, _JSONL)]
        pools = (
            self._csv_pool(rng, counts[_CSV]),
            _json_pool(rng, counts[_JSON]),
            _jsonl_pool(rng, counts[_JSONL]),
        )
        cursors = [0, 0, 0]

        lines: list[bytes] = []
        labels: list[tuple[int, str]] = []
        for k, kind, trail, enc64, iid, label, delay, eid, t, frac in zip(
            n_records.tolist(),
            kinds.tolist(),
            trailing.tolist(),
            b64.tolist(),
            has_iid.tolist(),
            labelled.tolist(),
            delays.tolist(),
            event_ids,
            ms.tolist(),
            fractional.tolist(),
            strict=True,
        ):
            pool, at = pools[kind], cursors[kind]
            cursors[kind] = at + k
            rows, scores, truth = pool.rows[at : at + k], pool.scores[at : at + k], pool.truth[at : at + k]
            if kind == _CSV:
                in_type, out_type, encoding = "text/csv", "text/csv; charset=utf-8", "CSV"
                body_in = "\n".join(rows) + ("\n" if k > 1 and trail else "")
                body_out = "\n".join(scores)
                label_data = "\n".join(["1" if v else "0" for v in truth])
            else:
                predicted = [int(float(s) >= 0.5) for s in scores]
                if kind == _JSONL:
                    in_type = out_type = "application/jsonlines"
                    body_in = "\n".join(['{"features":[' + r + "]}" for r in rows])
                    body_out = "".join(
                        [f'{{"predicted_label":{p},"score":{s}}}\n' for p, s in zip(predicted, scores, strict=True)]
                    )
                else:
                    in_type = out_type = "application/json"
                    instances = ", ".join(['{"features": [' + r.replace(",", ", ") + "]}" for r in rows])
                    body_in = '{"instances": [' + instances + "]}"
                    predictions = ", ".join(
                        [f'{{"score": {s}, "predicted_label": {p}}}' for p, s in zip(predicted, scores, strict=True)]
                    )
                    body_out = '{"predictions": [' + predictions + "]}"
                encoding = "JSON"
                if k == 1:
                    label_data = f'{{"label": {truth[0]}}}'
                else:
                    label_data = '{"instances": [' + ", ".join([f'{{"label": {v}}}' for v in truth]) + "]}"
            label_encoding = encoding
            if enc64:
                body_in = base64.b64encode(body_in.encode()).decode("ascii")
                body_out = base64.b64encode(body_out.encode()).decode("ascii")
                encoding = "BASE64"
            metadata = {EVENT_ID: eid}
            if iid:
                self.inference_ids += 1
                metadata[INFERENCE_ID] = str(self.inference_ids)
            metadata[INFERENCE_TIME] = time_prefix + _MMSS[t // 1000] + (f".{t % 1000:03d}Z" if frac else "Z")
            event = {
                CAPTURE_DATA: {
                    ENDPOINT_INPUT: {
                        OBSERVED_CONTENT_TYPE: in_type,
                        MODE: MODE_INPUT,
                        DATA: body_in,
                        ENCODING: encoding,
                    },
                    ENDPOINT_OUTPUT: {
                        OBSERVED_CONTENT_TYPE: out_type,
                        MODE: MODE_OUTPUT,
                        DATA: body_out,
                        ENCODING: encoding,
                    },
                },
                EVENT_METADATA: metadata,
                EVENT_VERSION: EVENT_VERSION_VALUE,
            }
            lines.append(orjson.dumps(event))
            if label:
                key = metadata.get(INFERENCE_ID, eid)
                line = encode_label(key, label_data, label_encoding)
                # Labels wait in memory for hours; orjson's bytes keep a ~4 KiB buffer each, a str copy does not.
                labels.append((delay, line.decode()))
        lines.append(b"")
        return _Batch(b"\n".join(lines), n, sum(counts), labels)
