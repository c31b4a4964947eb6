"""HDF5 latent stores: the per-shard format, the combined index, inspect and verify."""
