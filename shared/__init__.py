"""Library shared by every CryptoSpreadEdge worker."""
