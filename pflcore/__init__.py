"""Shared machinery: data, partitions, training loops, simulation, records, plots."""
