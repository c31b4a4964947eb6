"""Encoding shards into latent stores (the pre_encode stage)."""
