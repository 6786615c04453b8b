"""FedFomo (Zhang et al., ICLR 2021): first-order model optimisation on Flower."""

from pflcore.pyversion import require_python

require_python()  # before any heavy import: one line on an old interpreter
