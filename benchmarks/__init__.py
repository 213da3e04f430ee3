"""Benchmarks: each ``bench_*.py`` module has a ``main()`` printing ratios measured in one run."""
