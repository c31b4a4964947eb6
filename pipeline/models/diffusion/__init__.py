"""Diffusion: the DiT backbone (objectives, samplers and the model wrapper as their stages land)."""
