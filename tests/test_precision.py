"""--precision auto (pcae/precision.py): the hardware rule, the measurement and its cache."""
from __future__ import annotations

import json

import pytest
import torch

from pcae import precision as P

CPU = torch.device("cpu")


def test_explicit_precisions_pass_through():
    assert P.choose("fp32", CPU)["used"] == "fp32" and P.choose("bf16", CPU)["used"] == "bf16"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        P.choose("fp16", CPU)


def test_cpu_without_bf16_arithmetic_is_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: [])
    chosen = P.choose("auto", CPU, measure=lambda p: pytest.fail("must not measure"))
    assert chosen["used"] == "fp32" and "no bf16 arithmetic" in chosen["why"]


@pytest.mark.parametrize("fp32, bf16, used", [(1.0, 0.5, "bf16"), (1.0, 0.95, "fp32"), (1.0, 2.0, "fp32")])
def test_cpu_with_bf16_measures_once_and_caches(fp32, bf16, used, monkeypatch, tmp_path):
    monkeypatch.setenv("PCAE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ["amx_bf16"])
    calls = []

    def measure(p):
        calls.append(p)
        return {"fp32": fp32, "bf16": bf16}[p]

    chosen = P.choose("auto", CPU, measure, model_key="model A")
    assert chosen["used"] == used and sorted(calls) == ["bf16", "fp32"] and "amx_bf16" in chosen["why"]
    again = P.choose("auto", CPU, measure, model_key="model A")
    assert again == chosen and len(calls) == 2  # read from the cache
    P.choose("auto", CPU, measure, model_key="model B")
    assert len(calls) == 4  # another model is measured anew
    assert len(json.loads((tmp_path / P.CACHE_FILE).read_text())) == 2


def test_a_run_records_its_precision(tmp_path, monkeypatch):
    from pcae.tasks.pixelcnn import PixelCNNSpec
    from pcae.train import TrainConfig, train

    monkeypatch.setenv("PCAE_DATA_BUNDLED", "1")
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ["amx_bf16"])
    monkeypatch.setattr(P, "MIN_SPEEDUP", 0.0)  # whatever it measures, bf16 "wins"
    run = train(TrainConfig(out=str(tmp_path / "r"), steps=1, batch_size=4, image_size=8, eval_images=8,
                            n_samples=1), PixelCNNSpec(channels=4, n_layers=0))
    chosen = run.summary["precision"]
    assert chosen["asked"] == "auto" and chosen["used"] == "bf16" and set(chosen["seconds"]) == {"fp32", "bf16"}
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["precision"]["used"] == "bf16"
    assert 0 < run.summary["final_test_bpd"] < 9  # the loss stays fp32 and finite under bf16
