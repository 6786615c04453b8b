"""FedPer (Arivazhagan et al. 2019): a federated base, personal layers per client."""

from pflcore.pyversion import require_python

require_python()  # before any heavy import: one line on an old interpreter
