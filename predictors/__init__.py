"""Forecasters of the skipped block-stack residual from the cache history (cache engine issue)."""
