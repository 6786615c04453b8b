"""FedFomo's ServerApp and ClientApp for ``flwr run fedfomo/flwr_app``.

Both read the run from ``context.run_config`` (:mod:`pflcore.run.apps`);
``python -m fedfomo.main launcher=flwr`` submits a Hydra-composed run to them.
"""

from fedfomo.main import PACKAGE
from pflcore.run.apps import RunConfigClientApp, make_server_app

server_app = make_server_app(PACKAGE)
client_app = RunConfigClientApp(PACKAGE)
