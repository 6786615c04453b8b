"""pFedHN and pFedHN-PC (Shamsian et al., ICML 2021) on Flower."""
