"""Autoencoders: Oobleck encoder/decoder, bottlenecks, the Autoencoder API and checkpoint loading."""
