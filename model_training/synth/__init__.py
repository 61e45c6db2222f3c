"""Synthetic 12-lead ECGs with physiological findings, and the paper artifacts drawn over them."""
