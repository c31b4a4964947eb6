"""Audio -> WebDataset shards -> HDF5 latents -> diffusion / LM training, driven by one experiment YAML."""

__version__ = "0.1.0"
