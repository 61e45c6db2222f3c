"""Benchmarks of synthesis, cleaning and training recipes: each returns a plain dict for `ecg-intake bench`."""
