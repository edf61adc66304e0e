from cachepilot.embedded.digits.loading import load_classifier
from cachepilot.embedded.digits.train_classifier import train_classifier


def test_short_training_learns_and_saves(tmp_path):
    accuracy = train_classifier(tmp_path / "clf", epochs=3, progress=False)
    assert accuracy > 0.8
    assert load_classifier(tmp_path / "clf").num_features == 128
