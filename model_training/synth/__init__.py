"""Synthetic 12-lead ECGs with physiological findings, and the paper artifacts drawn over them."""

# Bumped whenever the generator, a renderer or an artifact draws differently for the same seed, so
# cached training pages drawn by older code are never reused.
SYNTH_VERSION = "3"
