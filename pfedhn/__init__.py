"""pFedHN and pFedHN-PC (Shamsian et al., ICML 2021) on Flower."""

from pflcore.pyversion import require_python

require_python()  # before any heavy import: one line on an old interpreter
