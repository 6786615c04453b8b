"""FedFomo (Zhang et al., ICLR 2021): first-order model optimisation on Flower."""

from pflcore.pyversion import require_python
from pflcore.run.stopping import stop_at_once_while_starting

require_python()  # before any heavy import: one line on an old interpreter
stop_at_once_while_starting(__name__)  # Ctrl-C while importing: one line
