"""lowloss: low-loss connection of neural-network weight vectors (Anokhin & Yarotsky, ICML 2020)."""

__version__ = "0.1.0"
