"""Reports: published tables, the paired comparisons, the results check.

Everything here reads run folders only (``rounds.csv``, ``clients.csv``,
``partition.csv``, ``summary.json``) and names no algorithm package: which
tables are published, from which runs, is declared in ``_static/tables.toml``
(see :mod:`pflcore.reports.spec`).

* :mod:`pflcore.reports.stats`: means, sample std, Student-t intervals, the
  words "above" / "below" / "tie" and "matches the paper".
* :mod:`pflcore.reports.runs`: one run's per-client accuracies at a chosen
  round, its partition, its seed.
* :mod:`pflcore.reports.spec`: the declarative list of published tables.
* :mod:`pflcore.reports.render`: a table's numbers, caption and verdicts.
* :mod:`pflcore.reports.publish`: ``python -m pflcore.reports.publish
  [--check]`` writes (or checks) every table into ``_static/`` and the
  documents' marked blocks.
* :mod:`pflcore.reports.portable`: absolute paths out of committed records.
* :mod:`pflcore.reports.import_run`: copy a finished run folder into
  ``_static/runs/``.
"""
