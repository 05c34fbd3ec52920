"""Encoders: the shared contract for every registered encoder, then each encoder's own properties.

FaceNet runs with random weights (nothing is downloaded); its pretrained path is exercised with a
state dict of the right shapes saved into a temporary TORCH_HOME.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from encoders import ENCODER_NAMES, ENCODERS, build_encoder, load_encoder
from pcae.errors import PcaeError

DATA = Path(__file__).parent / "data"
VGGFACE2 = "20180402-114759-vggface2.pt"


@pytest.fixture(scope="module")
def facenet():
    """Random weights; 80x80 crops instead of the default 160 cut each forward's CPU time by 4."""
    torch.manual_seed(0)
    return build_encoder("facenet", weights="random", image_size=80)


@pytest.fixture(scope="module")
def dlib_encoder():
    """dlib's pretrained face model (a dependency of pcae)."""
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:  # found, not imported: its
        pytest.skip("face-recognition-models is not installed")      # __init__ needs setuptools
    return build_encoder("dlib")


@pytest.fixture(scope="module")
def detections(facenet):
    """(crop, prob) for each bundled photo, computed once."""
    return {name: facenet.detect(Image.open(DATA / f"{name}.jpg"))[:2]
            for name in ("astronaut", "camera", "coffee")}


@pytest.fixture
def no_download(monkeypatch):
    """Make any attempt by facenet-pytorch to download weights fail the test."""
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")
    monkeypatch.setattr(irv1, "download_url_to_file", refuse)


def make_case(name, request):
    """(encoder, batch) for a registered encoder name."""
    g = torch.Generator().manual_seed(1)
    if name == "conv":
        torch.manual_seed(0)
        enc = build_encoder("conv", in_channels=3, image_size=(12, 10), bottleneck=5, channels=4)
        return enc, torch.randint(0, 256, (3, 3, 12, 10), generator=g, dtype=torch.uint8)
    if name == "onehot":
        return build_encoder("onehot", num_classes=7), torch.tensor([0, 6, 3])
    if name == "facenet":
        return (request.getfixturevalue("facenet"),
                torch.randint(0, 256, (2, 3, 40, 40), generator=g, dtype=torch.uint8))
    if name == "dlib":
        return (request.getfixturevalue("dlib_encoder"),
                torch.randint(0, 256, (2, 3, 150, 150), generator=g, dtype=torch.uint8))
    raise AssertionError(f"no test case for encoder {name!r}: add one")


def test_registry_lists_every_encoder_without_torch():
    assert ENCODER_NAMES == tuple(ENCODERS) == ("conv", "onehot", "facenet", "dlib")
    code = "import sys, encoders; print(encoders.ENCODER_NAMES); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(ValueError, match="encoder must be one of conv, onehot, facenet, dlib, got 'vae'"):
        build_encoder("vae")
    with pytest.raises(ValueError, match="'name'"):
        load_encoder({"bottleneck": 3})


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_contract_and_config_round_trip(name, request):
    enc, batch = make_case(name, request)
    h = enc(batch)
    assert h.shape == (batch.shape[0], enc.dim) and h.dtype == torch.float32
    assert torch.isfinite(h).all()
    assert isinstance(enc.trainable, bool) and enc.input in ("images", "labels")
    config, pre = enc.config, enc.preprocessing
    assert config["name"] == name
    json.dumps(config), json.dumps(pre)  # plain dicts only
    rebuilt = load_encoder(json.loads(json.dumps(config)), enc.state_dict())
    assert rebuilt.config == config and rebuilt.preprocessing == pre
    assert torch.equal(rebuilt(batch), h)


# -- conv ------------------------------------------------------------------------------------------

def test_conv_bottleneck_must_be_positive():
    with pytest.raises(ValueError, match=r"^bottleneck must be >= 1, got 0$"):
        build_encoder("conv", bottleneck=0)


@pytest.mark.parametrize("C, size", [(1, (28, 28)), (3, (32, 32)), (1, (5, 7)), (3, (64, 48))])
def test_conv_any_image_size(C, size):
    enc = build_encoder("conv", in_channels=C, image_size=size, bottleneck=10, channels=4)
    assert enc(torch.randint(0, 256, (2, C, *size))).shape == (2, 10)


def test_conv_rejects_wrong_inputs():
    enc = build_encoder("conv", image_size=(8, 8), bottleneck=2, channels=4)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\), got \(2, 1, 9, 8\)"):
        enc(torch.zeros(2, 1, 9, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="integer levels"):
        enc(torch.zeros(2, 1, 8, 8))


def test_conv_standardises_h_per_dimension():
    torch.manual_seed(0)
    enc = build_encoder("conv", image_size=(8, 8), bottleneck=3, channels=4)
    x = torch.randint(0, 256, (64, 1, 8, 8))
    h = enc.train()(x)
    assert torch.allclose(h.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(h.var(0, unbiased=False), torch.ones(3), atol=1e-3)
    raw = build_encoder("conv", image_size=(8, 8), bottleneck=3, channels=4, normalize="none")
    raw.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("norm.")})
    assert not torch.allclose(raw(x).mean(0), torch.zeros(3), atol=1e-3)
    # One image in training mode uses the running statistics instead of failing.
    single = enc(x[:1])
    assert torch.allclose(single, enc.eval()(x[:1]), atol=1e-6)
    with pytest.raises(ValueError, match="normalize must be 'batchnorm' or 'none', got 'layer'"):
        build_encoder("conv", normalize="layer")


def test_conv_config_without_normalize_is_the_unnormalised_encoder():
    enc = build_encoder("conv", image_size=(8, 8), bottleneck=3, channels=4, normalize="none")
    options = {k: v for k, v in enc.config.items() if k not in ("name", "normalize")}
    again = type(enc).from_config(options, enc.state_dict())
    assert again.normalize == "none"
    again.load_state_dict(enc.state_dict())


# -- onehot ----------------------------------------------------------------------------------------

def test_onehot_rows_and_range():
    enc = build_encoder("onehot", num_classes=4)
    assert not enc.trainable and enc.dim == 4 and not list(enc.parameters())
    assert torch.equal(enc(torch.tensor([2, 0])), torch.tensor([[0., 0, 1, 0], [1, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got range \[0, 4\]"):
        enc(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        build_encoder("onehot", num_classes=0)


# -- facenet ---------------------------------------------------------------------------------------

def test_facenet_is_frozen_and_says_random(facenet):
    assert not facenet.trainable and facenet.dim == 512
    assert not any(p.requires_grad for p in facenet.parameters())
    facenet.train()
    assert not facenet.training and not facenet.net.training
    assert facenet.config["weights"] == "random"
    assert facenet.preprocessing["random_weights"] is True
    assert "random" in facenet.preprocessing["weights"]


def test_facenet_detects_faces_in_bundled_photos(facenet, detections):
    for name in ("astronaut", "camera"):  # camera.jpg is greyscale: detect converts to RGB
        crop, prob = detections[name]
        assert crop.shape == (3, 80, 80) and crop.dtype == torch.uint8, name
        assert prob > 0.95, name
    crop, prob = detections["coffee"]
    assert crop is None and 0.0 <= prob < 0.9
    with pytest.raises(ValueError, match=r"face_index must be in \[0, 1\)"):
        facenet.detect(Image.open(DATA / "astronaut.jpg"), face_index=1)


def test_facenet_embeds_crops_as_unit_vectors(facenet, detections):
    crops = torch.stack([detections["astronaut"][0], detections["camera"][0]])
    h = facenet(crops)
    assert torch.allclose(h.norm(dim=1), torch.ones(2), atol=1e-5)
    # forward == standardise + embed_crops (80x80 crops need no resize); eval-mode rows are independent
    from encoders.facenet import standardize
    assert torch.allclose(facenet.embed_crops(standardize(crops[:1].float())), h[:1], atol=1e-6)


def test_facenet_detect_file_errors(facenet, tmp_path):
    coffee = DATA / "coffee.jpg"
    with pytest.raises(PcaeError, match=rf"^no face found in {coffee} \(best probability 0\.\d{{3}}\)$"):
        facenet.detect_file(coffee)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(PcaeError, match="notes.jpg is not a readable image"):
        facenet.detect_file(bad)
    with pytest.raises(PcaeError, match="missing.jpg does not exist"):
        facenet.detect_file(tmp_path / "missing.jpg")


def test_facenet_vggface2_path_reads_torch_home(facenet, tmp_path, monkeypatch, no_download):
    """facenet-pytorch's own pretrained path, fed a file of the right shapes (8631-way logits too)."""
    state = dict(facenet.net.state_dict())
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}  # not the random init
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / VGGFACE2)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    enc = build_encoder("facenet", weights="vggface2")
    loaded = enc.net.state_dict()
    assert "logits.weight" not in loaded
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert enc.config["weights"] == "vggface2" and enc.preprocessing["random_weights"] is False


def test_facenet_missing_weights_says_where_to_put_them(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "checkpoints" / VGGFACE2
    with pytest.raises(PcaeError, match=f"put {VGGFACE2} .* at {expected} "):
        build_encoder("facenet")
    assert not expected.exists()


def test_facenet_missing_weights_are_downloaded_like_facenet_pytorch_does(facenet, tmp_path, monkeypatch):
    """Without PCAE_OFFLINE, a missing file is fetched by facenet-pytorch's own download (faked
    here: no network in tests); a failed download is one line naming where to put the file."""
    import urllib.error

    import facenet_pytorch.models.inception_resnet_v1 as irv1

    monkeypatch.delenv("PCAE_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "checkpoints" / VGGFACE2

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(irv1, "download_url_to_file", offline)
    with pytest.raises(PcaeError, match=f"could not be downloaded .*no route to host.*put {VGGFACE2} .* at {expected}"):
        build_encoder("facenet")
    state = {**facenet.net.state_dict(), "logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)}
    fetched = []

    def download(url, dst, *args, **kwargs):
        fetched.append(url)
        torch.save(state, dst)
    monkeypatch.setattr(irv1, "download_url_to_file", download)
    enc = build_encoder("facenet")
    assert fetched and VGGFACE2 in fetched[0] and expected.is_file()
    assert torch.equal(enc.net.last_linear.weight, facenet.net.last_linear.weight)


def test_facenet_weights_file(facenet, tmp_path):
    path = tmp_path / "facenet.pt"
    torch.save(facenet.net.state_dict(), path)
    enc = build_encoder("facenet", weights=str(path))
    assert enc.config["weights"] == str(path.resolve())
    assert enc.preprocessing["random_weights"] is False
    assert torch.equal(enc.net.last_linear.weight, facenet.net.last_linear.weight)
    with pytest.raises(PcaeError, match="nope.pt does not exist"):
        build_encoder("facenet", weights=str(tmp_path / "nope.pt"))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(PcaeError, match="text.pt: not a FaceNet weights file .*: not a torch file"):
        build_encoder("facenet", weights=str(tmp_path / "text.pt"))
    torch.save(build_encoder("conv").state_dict(), tmp_path / "conv.pt")
    with pytest.raises(PcaeError, match="conv.pt does not hold InceptionResnetV1 weights"):
        build_encoder("facenet", weights=str(tmp_path / "conv.pt"))


# -- dlib ------------------------------------------------------------------------------------------

def test_dlib_same_person_close_other_people_far(dlib_encoder):
    """The astronaut photo against transformed copies of it (the same person) and against the other
    bundled photos' faces: dlib's published threshold separates them."""
    from PIL import ImageEnhance, ImageOps

    from encoders.dlib import SAME_PERSON

    photo = Image.open(DATA / "astronaut.jpg").convert("RGB")
    copies = [ImageOps.mirror(photo), ImageEnhance.Brightness(photo).enhance(0.5),
              photo.resize((photo.width * 2, photo.height * 2)), photo.rotate(10)]
    chip, score, _ = dlib_encoder.detect(photo)
    assert chip.shape == (3, 150, 150) and chip.dtype == torch.uint8 and score > 0
    chips = [chip] + [dlib_encoder.detect(c)[0] for c in copies]
    h = dlib_encoder(torch.stack(chips))
    assert h.shape == (5, 128)
    distances = (h[1:] - h[0]).norm(dim=1)
    assert (distances < SAME_PERSON).all(), distances
    # a face that is not the astronaut's: the camera man of scikit-image's photo
    other = dlib_encoder.detect(Image.open(DATA / "camera.jpg"))[0]
    if other is not None:
        assert (dlib_encoder(other[None])[0] - h[0]).norm() > SAME_PERSON
    # no face: None and how close the detector came; a file without one is a one-line error
    none, best, _ = dlib_encoder.detect(Image.open(DATA / "coffee.jpg"))
    assert none is None and best < 0
    with pytest.raises(PcaeError, match=r"no face found in .*coffee.jpg \(best HOG score"):
        dlib_encoder.detect_file(DATA / "coffee.jpg")
    landmarks = dlib_encoder.landmarks68(chip[None])
    assert landmarks.shape == (1, 68, 2) and (landmarks >= -20).all() and (landmarks <= 170).all()


def test_dlib_records_its_model_and_refuses_another(dlib_encoder):
    config = dlib_encoder.config
    assert config["model_sha1"] and dlib_encoder.preprocessing["random_weights"] is False
    with pytest.raises(PcaeError, match="made with another dlib face model"):
        load_encoder({**config, "model_sha1": "0" * 40})
