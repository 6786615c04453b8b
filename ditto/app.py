"""Ditto's ServerApp and ClientApp: ``flwr run ditto/flwr_app`` (pflcore.run.apps)."""

from ditto.main import PACKAGE
from pflcore.run.apps import RunConfigClientApp, make_server_app

server_app = make_server_app(PACKAGE)
client_app = RunConfigClientApp(PACKAGE)
