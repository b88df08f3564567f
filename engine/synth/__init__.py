"""Seeded generator of realistic Amazon SageMaker data-capture trees.

The output mirrors what a real-time endpoint with data capture enabled, plus a ground-truth labelling
job, leave in S3::

    {dest}/capture/{endpoint}/{variant}/YYYY/MM/DD/HH/{MM}-{SS}-{mmm}-{uuid4}.jsonl
    {dest}/ground-truth/YYYY/MM/DD/HH/{MMSS}-{n}.jsonl
    {dest}/synth.json

Every capture line is compact JSON in SageMaker's key order. Payloads are CSV (the XGBoost churn example:
integers, 1-2 decimal floats and one-hot dummies), JSON (``{"instances": ...}`` / ``{"predictions": ...}``)
or JSON Lines, some of them BASE64-encoded, some carrying several records. The same options always give
byte-identical output: every random choice, UUIDs included, comes from one seeded numpy generator.

:func:`synth_batch` writes what batch transform jobs with data capture (and ``GenerateInferenceId``) leave::

    {dest}/transform-input/job-{n}/data-{i}.csv[.gz] | data-{i}.jsonl[.gz]
    {dest}/transform-output/job-{n}/{input name}.out
    {dest}/batch-capture/input/YYYY/MM/DD/HH/{uuid4}.json     (manifests; HH = the job's start hour)
    {dest}/batch-capture/output/YYYY/MM/DD/HH/{uuid4}.json
    {dest}/ground-truth-batch/YYYY/MM/DD/HH/{MMSS}-{n}.jsonl
    {dest}/synth-batch.json

The generator streams one capture object at a time, so memory stays bounded whatever the output size; the
per-row feature text is built in bulk with numpy (fixed-width token gather, then dropping the padding) because
formatting tens of values per row in Python would dominate the runtime of gigabyte-sized benchmarks.
"""

from engine.synth.batch import synth_batch
from engine.synth.options import BatchSynthOptions, BatchSynthSummary, SynthOptions, SynthSummary, refuse_non_empty
from engine.synth.realtime import synth

__all__ = [
    "BatchSynthOptions",
    "BatchSynthSummary",
    "SynthOptions",
    "SynthSummary",
    "refuse_non_empty",
    "synth",
    "synth_batch",
]
