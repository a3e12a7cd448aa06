"""attention techniques."""
