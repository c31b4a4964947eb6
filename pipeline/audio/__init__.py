"""Audio I/O: demo data, shard codecs, decoding and resampling."""
