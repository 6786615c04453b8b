"""FedFomo (Zhang et al., ICLR 2021): first-order model optimisation on Flower."""
