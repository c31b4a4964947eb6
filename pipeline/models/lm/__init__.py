"""Language models over discrete codes: codebook interleaving patterns, the decoder-only LM."""
