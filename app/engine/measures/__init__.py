"""Measures between descriptors, sets of vectors and groups."""
