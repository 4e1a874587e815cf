"""mboard: a fault-tolerant, chain-replicated message board."""

__version__ = "0.1.0"
