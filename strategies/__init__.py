"""The Flower server side of fed-opc: strategies, the ServerApp body, and the run driver."""
