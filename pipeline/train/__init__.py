"""Training loops: the autoencoder stage now; diffusion and LM training as their stages land."""
