"""Per-FedAvg (Fallah et al. 2020) and Personalized FedAvg (Jiang et al. 2019)."""
