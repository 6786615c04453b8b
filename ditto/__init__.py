"""Ditto (Li et al., ICML 2021): a personal model regularised towards the global one."""
