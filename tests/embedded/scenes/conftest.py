import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches here are tiny: on a busy 2-core machine a second thread costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
