import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def pipe():
    """The embedded pipeline, loaded once per test session."""
    from cachepilot.embedded.digits.loading import load_pipeline

    pipeline = load_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def classifier():
    from cachepilot.embedded.digits.loading import load_classifier

    return load_classifier()
