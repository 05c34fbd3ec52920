"""Suite-wide test settings."""
import pytest


@pytest.fixture(autouse=True)
def _bundled_default_data(monkeypatch):
    # the same default data everywhere: the bundled Fashion-MNIST subset, whether or not the full
    # set is installed on this machine
    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
