"""Ditto, FedAvg (+ FT) and Local-only on FedFomo's data: ``python -m ditto.main``."""

from typing import Any

from ditto.client import DittoSettings, fedfomo_config, make_client_app
from fedfomo.main import FedFomoPackage, FomoPrepared
from pflcore.run.stopping import run_entry


class DittoPackage(FedFomoPackage):
    """FedFomo's package (data, model, FedAvg's server, baselines), Ditto's client."""

    name = "ditto"
    description = "Ditto (Li et al. 2021), FedAvg (+ FT) and Local-only"
    schema = DittoSettings  # type: ignore[assignment]  # FedFomo's less fomo.*
    client_app_for = staticmethod(make_client_app)

    def prepare(self, cfg: Any) -> FomoPrepared:
        """FedFomo's run of the same settings, with ``ditto_lambda`` in the summary."""
        config = self.resolve(cfg)
        fomo = FedFomoPackage().prepare(fedfomo_config(config))
        summary = {**fomo.summary, "ditto_lambda": config["ditto"]["lam"]}
        return FomoPrepared(config, fomo.data, fomo.initial, summary, fomo.settings)


PACKAGE = DittoPackage()
main = PACKAGE.hydra_main()

if __name__ == "__main__":
    run_entry(main)
