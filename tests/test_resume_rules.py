"""What a run trains and what a resumed run keeps are decided in the library, the same from Python
as from the CLI: `pcae.kinds.autoencoder_spec` routes face encoders to the portrait spec, and
`pcae.train.train(resume=True)` refuses given model and data options that disagree with the run
and keeps its stored run options."""
from __future__ import annotations

import pytest

from pcae.checkpoint import load_checkpoint, run_kind, save_checkpoint
from pcae.errors import PcaeError
from pcae.kinds import autoencoder_spec
from pcae.resume import options_set
from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.tasks.pixelcnn import PixelCNNSpec
from pcae.train import TrainConfig, train

TINY_CONFIG = dict(batch_size=8, image_size=8, eval_images=16, n_samples=2, log_every=1, judge_images=0)


@pytest.fixture(scope="module")
def pixelcnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    train(TrainConfig(out=str(out), steps=2, eval_every=1, **TINY_CONFIG), PixelCNNSpec(channels=8, n_layers=1))
    return out


def starts(events):
    return lambda event, info: events.append(info) if event == "start" else None


def test_python_resume_refuses_a_changed_model_or_training_option(pixelcnn_run):
    for config, spec, words in [
        (dict(steps=3), PixelCNNSpec(channels=16, n_layers=1),
         "--channels 16 conflicts with the run being resumed (8); a resumed run keeps its model"),
        (dict(steps=3), PixelCNNSpec(n_layers=1, condition="label"), "--condition label conflicts"),
        (dict(steps=3, lr=0.01), PixelCNNSpec(), "--lr 0.01 conflicts with the run being resumed (0.004)"),
        (dict(steps=3, data="mnist"), PixelCNNSpec(), "--data mnist conflicts"),
    ]:
        with pytest.raises(PcaeError, match=words.replace("(", r"\(").replace(")", r"\)")):
            train(TrainConfig(out=str(pixelcnn_run), **config), spec, resume=True)
    assert load_checkpoint(pixelcnn_run / "last.pt")["step"] == 2  # nothing ran


def test_python_resume_keeps_the_stored_run_options_and_says_which(pixelcnn_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(pixelcnn_run, out)
    events = []
    # only what is set counts as given: the spec's and config's defaults mean "as stored"
    result = train(TrainConfig(out=str(out), steps=3), PixelCNNSpec(), resume=True, callback=starts(events))
    assert result.status == "finished" and result.summary["steps"] == 3
    stored = load_checkpoint(out / "last.pt")["configs"]["train"]
    assert stored["eval_every"] == 1 and stored["eval_images"] == 16 and stored["image_size"] == 8
    assert "eval-every 1" in events[0]["kept"] and "eval-images 16" in events[0]["kept"]
    # given explicitly, a run option is taken even where it equals TrainConfig's default
    events.clear()
    train(TrainConfig(out=str(out), steps=4), PixelCNNSpec(), resume=True, callback=starts(events),
          given={"steps", "eval_every"})
    assert load_checkpoint(out / "last.pt")["configs"]["train"]["eval_every"] == TrainConfig().eval_every
    assert not any(k.startswith("eval-every") for k in events[0]["kept"])


def test_options_set_is_what_differs_from_the_defaults():
    assert options_set(TrainConfig()) == set()  # steps: 800 is the default, not a choice
    assert options_set(TrainConfig(out="x", steps=5, lr=1e-3)) == {"out", "steps", "lr"}
    assert options_set(AutoencoderSpec(bottleneck=3)) == {"bottleneck"}


def test_autoencoder_spec_routes_face_encoders_to_the_portrait_spec(tmp_path):
    from pcae.portrait import PortraitSpec

    assert autoencoder_spec() == AutoencoderSpec()
    assert autoencoder_spec(bottleneck=3, decoder="deconv") == AutoencoderSpec(bottleneck=3, decoder="deconv")
    spec = autoencoder_spec(encoder="facenet", facenet_weights="random", channels=6, encoder_channels=4)
    assert isinstance(spec, PortraitSpec) and (spec.encoder, spec.channels) == ("facenet", 6)
    assert autoencoder_spec(encoder="dlib").encoder == "dlib"
    for options, words in [
        (dict(encoder="conv", cache="faces.h5"), "--cache goes with a face encoder (facenet, dlib), not conv"),
        (dict(facenet_weights="random"), "--facenet-weights goes with a face encoder"),
        (dict(encoder="dlib", bottleneck=3), "--bottleneck does not go with --encoder dlib (h is dlib's "
         "128-d embedding)"),
        (dict(encoder="facenet", decoder="deconv"), "--decoder deconv does not go with --encoder facenet"),
        (dict(encoder="dlib", facenet_weights="random"), "--facenet-weights and --facenet-crop-size go "
         "with --encoder facenet, not dlib"),
        (dict(decoder="deconv", spatial_cond=True), "--spatial-cond needs --decoder pixelcnn"),
        (dict(encoder="vae"), "encoder must be one of"),
    ]:
        with pytest.raises(PcaeError, match=words.replace("(", r"\(").replace(")", r"\)")):
            autoencoder_spec(**options)
    # resuming a portrait run with no encoder given stays a portrait run (its kind, read lazily)
    run = tmp_path / "faces"
    run.mkdir()
    save_checkpoint({"kind": "portrait", "configs": {}, "state_dicts": {}}, run / "last.pt")
    assert run_kind(run) == "portrait" and run_kind(tmp_path / "none") is None
    assert isinstance(autoencoder_spec(resuming=run), PortraitSpec)
    assert isinstance(autoencoder_spec(resuming=run, encoder="conv"), AutoencoderSpec)


def test_the_same_data_file_by_another_path_is_the_same_setting(tmp_path, monkeypatch):
    from pcae.resume import _same_setting

    monkeypatch.chdir(tmp_path)
    assert _same_setting("data", "h5:faces.h5", f"h5:{tmp_path / 'faces.h5'}", None)
    assert not _same_setting("data", "h5:faces.h5", f"folder:{tmp_path / 'faces.h5'}", None)
    assert not _same_setting("data", "h5:faces.h5", "h5:other.h5", None)


def test_resume_refuses_a_shorter_run_and_takes_its_own_size(pixelcnn_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(pixelcnn_run, out)
    with pytest.raises(PcaeError, match="--steps 1 is fewer than the 2 steps"):
        train(TrainConfig(out=str(out), steps=1), PixelCNNSpec(), resume=True)
    with pytest.raises(PcaeError, match="--image-size 9 conflicts"):
        train(TrainConfig(out=str(out), steps=3, image_size=9), PixelCNNSpec(), resume=True)
    assert train(TrainConfig(out=str(out), steps=3, image_size=8), PixelCNNSpec(), resume=True).status == "finished"


def test_a_size_equal_to_the_sources_is_no_conflict(tmp_path):
    out = tmp_path / "native"
    train(TrainConfig(out=str(out), steps=1, eval_images=16, n_samples=2, judge_images=0, batch_size=8),
          PixelCNNSpec(channels=8, n_layers=0))
    result = train(TrainConfig(out=str(out), steps=2, image_size=28, image_channels=1), PixelCNNSpec(),
                   resume=True, given={"steps", "image_size", "image_channels"})
    assert result.status == "finished"
    with pytest.raises(PcaeError, match="--image-size 14 conflicts"):
        train(TrainConfig(out=str(out), steps=3, image_size=14), PixelCNNSpec(), resume=True)


@pytest.mark.parametrize("change, words", [
    (lambda c: c.pop("optimizer"), "field 'optimizer' must be an optimizer state"),
    (lambda c: c.pop("rng"), "field 'rng' must be the random states"),
    (lambda c: c.update(metrics="x"), "field 'metrics' must be a dict"),
    (lambda c: c["metrics"].update(best={"value": float("nan"), "step": 1}), "field 'metrics.best' must be"),
    (lambda c: c.update(position=10 ** 6), "field 'position' (1000000) is beyond the"),
], ids=["no-optimizer", "no-rng", "metrics-text", "best-nan", "position-beyond"])
def test_a_damaged_last_pt_is_refused_in_one_line(change, words, pixelcnn_run, tmp_path):
    import shutil

    import torch

    out = tmp_path / "run"
    shutil.copytree(pixelcnn_run, out)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, out / "last.pt")
    with pytest.raises(PcaeError) as info:
        train(TrainConfig(out=str(out), steps=3), PixelCNNSpec(), resume=True)
    assert words in str(info.value) and "\n" not in str(info.value)
