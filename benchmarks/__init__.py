"""Benchmarks: each ``bench_*.py`` module has a ``main()`` that prints ratios measured in one run."""
