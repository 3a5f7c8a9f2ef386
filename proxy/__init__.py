"""Stratum V1 failover proxy: invisible pool switching for mining farms."""

__version__ = "0.1.0"
