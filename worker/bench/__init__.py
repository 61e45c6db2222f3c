"""Serving benchmarks: decoding, the inference engines and the whole pipeline, measured on this machine."""
