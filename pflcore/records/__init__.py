"""Layer 4, records: what a run writes down.

The recorder (``rounds.csv``, ``clients.csv``, ``summary.json``), progress
lines, tracking mirrors and provenance. Imports config, data and local.
"""
