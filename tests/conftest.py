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


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    # pcae's caches (sample judges, face caches) live in one folder per test session: nothing is
    # written to the user's ~/.cache, and a judge trained for one test is reused by the next
    import os

    before = os.environ.get("PCAE_CACHE_DIR")
    os.environ["PCAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("pcae-cache"))
    os.environ["PCAE_OFFLINE"] = "1"  # nothing is downloaded at test time (FaceNet weights)
    yield
    if before is None:
        os.environ.pop("PCAE_CACHE_DIR", None)
    else:
        os.environ["PCAE_CACHE_DIR"] = before
