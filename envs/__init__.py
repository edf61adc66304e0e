"""Gymnasium environments of the caching decision (learned-policy issue)."""
