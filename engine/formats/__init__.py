"""SageMaker's wire formats in one place, for the writers (synth, the emulators, the capture writer) and the
readers (the decoders): `capture` (the real-time envelope), `ground_truth` (label records) and
`batch_transform` (appended inference IDs, JoinSource outputs, capture manifests). Import the module you need."""

__all__: list[str] = []
