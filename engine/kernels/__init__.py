"""Decoding kernels over bytes and Arrow arrays: capture envelopes (`envelope`), payloads (`payload`), hour
partitioning (`partition`) and the label join (`join`)."""
