"""Training for any supported pipeline: collection, forecaster heads and gates, schedule search, policies, `fit`."""
