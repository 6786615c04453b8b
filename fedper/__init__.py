"""FedPer (Arivazhagan et al. 2019): a federated base, personal layers per client."""
