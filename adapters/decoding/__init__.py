"""decoding techniques."""
