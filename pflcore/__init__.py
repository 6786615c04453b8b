"""Shared machinery: data, partitions, training loops, simulation, records, plots."""

from pflcore.pyversion import require_python

require_python()  # before any heavy import: one line on an old interpreter
