"""fed-opc: a federated machine-unlearning simulator built on Flower and Ray."""

__version__ = "0.1.0"
