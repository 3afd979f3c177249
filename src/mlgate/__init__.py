"""mlgate: a self-hosted MLOps control plane."""

__version__ = "0.1.0"
