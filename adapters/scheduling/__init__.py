"""scheduling techniques."""
