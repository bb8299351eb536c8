"""CryptoSpreadEdge worker processes and the ``cse`` command line."""
