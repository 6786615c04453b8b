"""Benchmarks of the suite (run as modules, e.g. ``python -m bench.fedper_speed``)."""
