"""The embedded digits model: a class-conditional pixel-space DiT on scikit-learn's 8x8 digits, its
pipeline class, its reference classifier and the classifier-based metrics (class accuracy, Fréchet
distance)."""
