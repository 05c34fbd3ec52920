"""Suite-wide test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The suite's models are tiny: intra-op threads buy nothing, and on a busy machine OpenMP's
    # spin-waiting makes every small op up to 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _bundled_default_data(monkeypatch):
    # the same default data everywhere: the bundled Fashion-MNIST subset, whether or not the full
    # set is installed on this machine
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
