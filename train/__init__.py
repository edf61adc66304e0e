"""Training jobs: the embedded backbone, its reference classifier (and later predictors, policies)."""
