"""Per-FedAvg (Fallah et al. 2020) and Personalized FedAvg (Jiang et al. 2019)."""

from pflcore.pyversion import require_python

require_python()  # before any heavy import: one line on an old interpreter
