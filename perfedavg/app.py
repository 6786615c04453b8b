"""Per-FedAvg's ServerApp and ClientApp for ``flwr run perfedavg/flwr_app``.

Both read the run from ``context.run_config`` (:mod:`pflcore.run.apps`);
``python -m perfedavg.main launcher=flwr`` submits a Hydra-composed run to them.
"""

from perfedavg.main import PACKAGE
from pflcore.run.apps import RunConfigClientApp, make_server_app

server_app = make_server_app(PACKAGE)
client_app = RunConfigClientApp(PACKAGE)
