"""Layer 5, fl: the Flower-facing pieces every package shares.

The shared strategy base on Flower's ``Strategy``, the generic message
protocol, client identity and sampling, the exchange of clients' personal
state, the baseline ClientApp (FedAvg, FedAvg + FT, Local) and fault
injection. Imports the layers below.
"""
