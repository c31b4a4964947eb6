"""Stages 1-2: plan (list audio, read headers, assign items to shards) and shard (write WebDataset tars)."""
