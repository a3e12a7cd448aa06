"""kvcache techniques."""
