"""The sample stage: exported model + frozen autoencoder -> audio files."""
