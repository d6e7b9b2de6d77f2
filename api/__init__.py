"""The HTTP API (FastAPI). It never imports torch: it validates specs against a stored description of GRPOConfig."""
