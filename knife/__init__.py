"""knife-marl: plasticity loss and KNIFE in multi-agent value factorization."""

__version__ = "0.1.0"
