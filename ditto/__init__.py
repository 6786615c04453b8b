"""Ditto (Li et al., ICML 2021): a personal model regularised towards the global one."""

from pflcore.pyversion import require_python
from pflcore.run.stopping import stop_at_once_while_starting

require_python()  # before any heavy import: one line on an old interpreter
stop_at_once_while_starting(__name__)  # Ctrl-C while importing: one line
