"""Autoencoder and deconv decoder: gradients reach the encoder end to end and nothing moves when it
is frozen; both deconv outputs; sampling; configs rebuild the same model."""
from __future__ import annotations

import io
import json
import math

import pytest
import torch
from helpers import grid_px, run_pcae
from PIL import Image

from encoders import build_encoder
from pcae.autoencoder import Autoencoder, build_autoencoder
from pcae.deconv import DeconvConfig, DeconvDecoder, gaussian_bits_per_dim
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig

SIZE = (8, 8)


def images(B=4, C=1, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, C, *size), generator=g, dtype=torch.uint8)


def pixelcnn_ae(m=3, C=1, spatial_cond=False, encoder=None, size=SIZE):
    torch.manual_seed(0)
    encoder = encoder or build_encoder("conv", in_channels=C, image_size=size, bottleneck=m, channels=4)
    decoder = GatedPixelCNN(PixelCNNConfig(image_channels=C, channels=6 * C, n_layers=2, cond_dim=encoder.dim,
                                           spatial_cond=spatial_cond, spatial_channels=4, image_size=size))
    return Autoencoder(encoder, decoder)


def deconv_ae(output, m=3, C=1):
    torch.manual_seed(0)
    encoder = build_encoder("conv", in_channels=C, image_size=SIZE, bottleneck=m, channels=4)
    return Autoencoder(encoder, DeconvDecoder(DeconvConfig(cond_dim=m, image_channels=C, image_size=SIZE,
                                                           channels=4, output=output)))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_end_to_end_step_trains_the_encoder_through_the_pixelcnn_loss():
    ae = pixelcnn_ae()
    x = images()
    before = snapshot(ae.encoder)
    opt = torch.optim.Adam(ae.trainable_parameters(), lr=1e-2)
    loss, metrics = ae.loss(x)
    loss.backward()
    assert torch.equal(loss.detach(), metrics["bits_per_dim"]) and 7.0 < loss.item() < 9.0
    for name, p in ae.encoder.named_parameters():  # the NLL reaches every encoder weight
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    after = ae.encoder.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_frozen_encoder_stays_bit_identical():
    ae = pixelcnn_ae().freeze_encoder()
    assert not ae.encoder.trainable and not any(p.requires_grad for p in ae.encoder.parameters())
    assert {id(p) for p in ae.trainable_parameters()} == {id(p) for p in ae.decoder.parameters()}
    before_enc, before_dec = snapshot(ae.encoder), snapshot(ae.decoder)
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-2, weight_decay=0.1)  # even given every parameter
    ae.train()
    assert not ae.encoder.training
    for step in range(2):
        opt.zero_grad()
        ae.loss(images(seed=step))[0].backward()
        opt.step()
    assert all(torch.equal(before_enc[k], v) for k, v in ae.encoder.state_dict().items())
    assert any(not torch.equal(before_dec[k], v) for k, v in ae.decoder.state_dict().items())


@pytest.mark.parametrize("output", ["mse", "categorical"])
def test_deconv_decoder_both_outputs(output):
    ae = deconv_ae(output, C=3)
    x = images(C=3)
    loss, metrics = ae.loss(x)
    loss.backward()
    assert set(metrics) == {"mse", "bits_per_dim"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in metrics.values())
    assert 0 < float(metrics["mse"]) < 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.encoder.parameters())
    with torch.no_grad():
        out = ae.decoder(ae.encode(x))
    if output == "mse":
        assert out.shape == (4, 3, *SIZE) and 0 <= float(out.min()) and float(out.max()) <= 1
        assert torch.equal(loss.detach(), metrics["mse"])
    else:
        assert out.shape == (4, 256, 3, *SIZE)
        assert torch.equal(loss.detach(), metrics["bits_per_dim"])
    rec = ae.reconstruct(x)
    assert rec.shape == x.shape and rec.dtype == torch.long and 0 <= rec.min() and rec.max() <= 255


def test_categorical_deconv_is_on_the_bits_per_dim_scale():
    """All-zero logits are the uniform distribution over 256 levels: exactly 8 bits/dim."""
    ae = deconv_ae("categorical")
    with torch.no_grad():
        ae.decoder.out.weight.zero_()
        ae.decoder.out.bias.zero_()
    loss, _ = ae.loss(images())
    assert loss.item() == pytest.approx(8.0, abs=1e-5)


def test_gaussian_bits_per_dim_is_a_distribution():
    mean = torch.full((1, 1, 1, 1), 0.3)
    for sigma in (0.002, 0.05, 2.0):
        bits = torch.stack([gaussian_bits_per_dim(mean, torch.full((1, 1, 1, 1), v), sigma)
                            for v in range(256)])
        assert (2.0 ** -bits.double()).sum().item() == pytest.approx(1.0, abs=1e-6)
    # an interior level at the mean: P = erf(1/2 / (s sqrt 2)) with s in levels
    s = 0.01 * 255
    x = torch.full((1, 1, 1, 1), 100)
    expected = -math.log2(math.erf(0.5 / (s * math.sqrt(2))))
    assert gaussian_bits_per_dim(x / 255.0, x, 0.01).item() == pytest.approx(expected, rel=1e-5)


def test_sample_shapes_seeds_and_sources():
    small = (4, 4)  # sampling is C*H*W forward passes
    ae = pixelcnn_ae(spatial_cond=True, size=small).eval()
    x = images(B=2, size=small)
    first = ae.sample(x, n_per=2, generator=torch.Generator().manual_seed(5))
    again = ae.sample(x, n_per=2, generator=torch.Generator().manual_seed(5))
    assert first.shape == (2, 2, 1, *small) and first.dtype == torch.long
    assert torch.equal(first, again) and 0 <= first.min() and first.max() <= 255
    h = ae.encode(x)
    from_h = ae.sample(h, n_per=2, generator=torch.Generator().manual_seed(5), method="naive")
    assert torch.equal(from_h, first)  # an image and its h condition the same way
    with pytest.raises(ValueError, match="n_per must be >= 1, got 0"):
        ae.sample(h, n_per=0)
    with pytest.raises(ValueError, match="reconstruct needs a deconv decoder"):
        ae.reconstruct(x)
    with pytest.raises(ValueError, match="sample needs a PixelCNN decoder"):
        deconv_ae("mse").sample(x)


def test_class_conditional_pixelcnn_reads_labels():
    ae = pixelcnn_ae(encoder=build_encoder("onehot", num_classes=5), size=(3, 3))
    x, y = images(B=3, size=(3, 3)), torch.tensor([0, 4, 2])
    loss, _ = ae.loss(x, y)
    assert torch.isfinite(loss)
    drawn = ae.sample(torch.tensor([1]), n_per=2, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (1, 2, 1, 3, 3)  # labels carry no size: the decoder's image_size
    with pytest.raises(ValueError, match="labels are required: the onehot encoder"):
        ae.loss(x)


def test_decoder_must_match_encoder_dim():
    encoder = build_encoder("conv", image_size=SIZE, bottleneck=4)
    decoder = DeconvDecoder(DeconvConfig(cond_dim=5, image_size=SIZE))
    with pytest.raises(ValueError, match="decoder cond_dim must equal the encoder's dim 4, got 5"):
        Autoencoder(encoder, decoder)
    with pytest.raises(ValueError, match="output must be one of mse, categorical, got 'l1'"):
        DeconvConfig(output="l1")


@pytest.mark.parametrize("make", [
    lambda: pixelcnn_ae(spatial_cond=True),
    lambda: pixelcnn_ae(encoder=build_encoder("onehot", num_classes=5)),
    lambda: deconv_ae("mse").freeze_encoder(),
    lambda: deconv_ae("categorical", C=3),
], ids=["pixelcnn-spatial", "pixelcnn-onehot", "deconv-mse-frozen", "deconv-categorical"])
def test_config_dict_rebuilds_the_same_model(make):
    ae = make()
    config = ae.config_dict()
    json.dumps(config)
    buffer = io.BytesIO()  # what a checkpoint does: plain dicts that load with weights_only=True
    torch.save({"config": config, "state": ae.state_dict()}, buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)
    rebuilt = build_autoencoder(stored["config"], stored["state"])
    assert rebuilt.config_dict() == config
    assert rebuilt.encoder_frozen == ae.encoder_frozen
    C = ae.decoder.config.image_channels
    x, y = images(C=C), torch.tensor([0, 1, 2, 3])
    assert torch.equal(rebuilt.loss(x, y)[0], ae.loss(x, y)[0])


# -- the commands: pcae train-ae, pcae reconstruct ---------------------------------------------------

TINY = ["--batch-size", "8", "--image-size", "8", "--eval-images", "16", "--log-every", "1",
        "--encoder-channels", "4", "--channels", "8", "--n-layers", "1", "--deconv-channels", "4"]


def png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A 2-step conv + PixelCNN run (bottleneck 3) on the bundled data at 8x8, through the library."""
    import os

    from pcae.tasks.autoencoder import AutoencoderSpec
    from pcae.train import TrainConfig, train
    out = tmp_path_factory.mktemp("ae") / "run"
    before = os.environ.get("PCAE_DATA_BUNDLED")
    os.environ["PCAE_DATA_BUNDLED"] = "1"
    try:
        train(TrainConfig(out=str(out), steps=2, batch_size=8, image_size=8, eval_images=16,
                          n_samples=4, log_every=1),
              AutoencoderSpec(bottleneck=3, encoder_channels=4, channels=8, n_layers=1))
    finally:
        if before is None:
            del os.environ["PCAE_DATA_BUNDLED"]
        else:
            os.environ["PCAE_DATA_BUNDLED"] = before
    return out


def test_train_ae_writes_a_run_and_reconstruct_draws_the_grid(ae_run, tmp_path, monkeypatch, capsys):
    from pcae.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(ae_run / "last.pt", kind="autoencoder")
    model = checkpoint["configs"]["model"]
    assert model["encoder"]["name"] == "conv" and model["encoder"]["bottleneck"] == 3
    assert model["decoder"]["kind"] == "pixelcnn" and checkpoint["step"] == 2
    summary = json.loads((ae_run / "summary.json").read_text())
    assert summary["kind"] == "autoencoder" and summary["metric"] == "bpd"
    assert 6.0 < summary["final_test_bpd"] < 9.0
    assert png_size(ae_run / "samples.png") == grid_px(5 * 10 + 2, 1 * 10 + 2, gap=8)  # 1 original | 4 samples
    classes = checkpoint["data"]["train"]["classes"]
    assert json.loads(Image.open(ae_run / "samples.png").text["rows"])[0] in classes  # the source's class
    # the sample judge scored 2 samples given h for each of the first test images (default 200)
    semantics = summary["semantics"]
    assert semantics["samples"] == 400 and semantics["sources"] == 200
    assert 0 <= semantics["class_agreement"] <= 1 and 0 < semantics["judge_accuracy"] <= 1
    assert semantics["diversity_rms"] > 0 and semantics["decoder"] == "pixelcnn"

    grid = tmp_path / "grid.png"
    code, out, err = run_pcae(monkeypatch, capsys, "reconstruct", ae_run / "last.pt", "--n", 2,
                              "--samples", 3, "--out", grid)
    assert code == 0, err
    assert png_size(grid) == grid_px(4 * 10 + 2, 2 * 10 + 2, gap=8)  # rows: an original | 3 samples
    assert "2 test images of fashion-mnist, each + 3 samples; bpd" in out
    rows = json.loads(Image.open(grid).text["rows"])
    assert len(rows) == 2 and set(rows) <= set(classes)
    assert "sample judge: " in out and "of 400 samples given h are judged their source's class" in out
    code, _, err = run_pcae(monkeypatch, capsys, "reconstruct", ae_run / "last.pt", "--out", grid)
    assert code == 1 and err.strip() == f"error: {grid}: already exists; pass --force to replace it"


def test_train_ae_frozen_encoder_from_checkpoint_stays_put(ae_run, tmp_path, monkeypatch, capsys):
    """--freeze-encoder --encoder-checkpoint: a deconv decoder on the PixelCNN-AE's encoder; the
    encoder's weights come out bit-identical, also across --resume."""
    from pcae.checkpoint import load_checkpoint

    out = tmp_path / "deconv"
    args = ["train-ae", "--decoder", "deconv", "--encoder-checkpoint", ae_run / "last.pt",
            "--freeze-encoder", "--out", out, "--n-samples", "2", *TINY]
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", 1)
    assert code == 0, err
    code, _, err = run_pcae(monkeypatch, capsys, *args, "--steps", 2, "--resume")
    assert code == 0, err

    def encoder_state(path):
        state = load_checkpoint(path)["state_dicts"]["model"]
        return {k: v for k, v in state.items() if k.startswith("encoder.")}
    source, trained = encoder_state(ae_run / "last.pt"), encoder_state(out / "last.pt")
    assert source.keys() == trained.keys() and all(torch.equal(source[k], trained[k]) for k in source)
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["step"] == 2 and checkpoint["configs"]["model"]["encoder_frozen"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "mse" and 0 < summary["final_test_mse"] < 1
    assert png_size(out / "samples.png") == grid_px(4 * 10 + 2, 1 * 10 + 2)  # 2 x (original, reconstruction)


def test_train_ae_help_lists_the_encoders(monkeypatch, capsys):
    code, out, _ = run_pcae(monkeypatch, capsys, "train-ae", "--help")
    assert code == 0 and "Encoder: conv, onehot, facenet" in out


@pytest.mark.parametrize("args, message", [
    (["--bottleneck", "0"], "bottleneck must be >= 1, got 0"),
    (["--encoder", "vae"], "encoder must be one of conv, onehot, facenet, dlib, got 'vae'"),
    (["--encoder-norm", "layer"], "--encoder-norm must be batchnorm or none, got 'layer'"),
    (["--bottleneck", "5", "--freeze-encoder", "--encoder-checkpoint", "{ckpt}"],
     "{ckpt}: its conv encoder has dim 3, but --bottleneck is 5"),
    (["--encoder", "facenet"], "portraits need photos: faces (the bundled ones), folder:PATH or h5:PATH, "
     "got --data 'fashion-mnist'"),
    (["--encoder", "facenet", "--decoder", "deconv", "--data", "folder:{ckpt}"],
     "--decoder deconv does not go with --encoder facenet"),
], ids=["bottleneck-0", "unknown-encoder", "unknown-norm", "frozen-dim-mismatch", "facenet-not-photos",
        "facenet-deconv"])
def test_train_ae_bad_inputs_are_one_line_errors(args, message, ae_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    values = {"ckpt": ae_run / "last.pt", "torch_home": tmp_path / "torch"}
    out = tmp_path / "run"
    code, _, err = run_pcae(monkeypatch, capsys, "train-ae", "--out", out, "--steps", 1,
                            *[a.format(**values) for a in args], *TINY)
    assert code == 1
    assert err.startswith("error: " + message.format(**values)) and err.count("\n") == 1
    assert "Traceback" not in err and not out.exists()


# -- train-ae --encoder facenet: the portrait pipeline (MTCNN, face cache, "portrait" checkpoint) ------

def test_train_ae_facenet_skips_faceless_photos_and_draws_portraits(tmp_path, monkeypatch, capsys):
    """Two faces and coffee.jpg; random 80x80 FaceNet, an 8x8 PixelCNN, 2 steps, then resume to 3."""
    from PIL import Image

    from pcae.checkpoint import load_checkpoint
    data = __import__("pathlib").Path(__file__).parent / "data"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "camera", "coffee"):  # at 128 px MTCNN still finds both faces, faster
        image = Image.open(data / f"{name}.jpg")
        image.resize((128, round(128 * image.height / image.width))).save(photos / f"{name}.jpg")
    out, cache = tmp_path / "run", tmp_path / "faces.h5"
    face = ["--facenet-weights", "random", "--facenet-crop-size", "80", "--cache", cache]
    code, text, err = run_pcae(
        monkeypatch, capsys, "train-ae", "--encoder", "facenet", "--data", f"folder:{photos}",
        "--out", out, *face, "--image-size", 8, "--channels", 6, "--n-layers", 1, "--steps", 2,
        "--batch-size", 1, "--n-samples", 2, "--eval-every", 0, "--checkpoint-every", 0)
    assert code == 0, err
    assert "faces: 2 in 3 photos (1 train, 1 test), 1 skipped; 8x8" in text
    assert "skipped coffee.jpg: no face (best probability" in text
    assert "warning: FaceNet weights are random (NOT pretrained)" in text
    assert "coffee.jpg" in (out / "train.log").read_text()
    checkpoint = load_checkpoint(out / "last.pt", kind="portrait")
    assert checkpoint["step"] == 2 and checkpoint["configs"]["model"]["cond_dim"] == 512
    assert checkpoint["configs"]["model"]["image_size"] in ([8, 8], (8, 8))
    assert checkpoint["configs"]["faces"]["cache"] == str(cache.resolve())

    grid = tmp_path / "grid.png"  # the run's checkpoint draws with `pcae portrait`
    code, text, err = run_pcae(monkeypatch, capsys, "portrait", data / "astronaut.jpg", "--n", 2,
                               "--checkpoint", out / "best.pt", "--out", grid)
    assert code == 0, err
    assert "diversity: pixel RMS between portraits" in text
    assert png_size(grid) == grid_px(3 * 10 + 2, 10 + 2, gap=8)  # the crop | 2 portraits

    # --resume finds the portrait run from its last.pt, without --encoder
    code, text, err = run_pcae(monkeypatch, capsys, "train-ae", "--resume", "--out", out, "--steps", 3)
    assert code == 0, err
    assert load_checkpoint(out / "last.pt", kind="portrait")["step"] == 3

    # bad options: one line each, before any detection and without a run folder
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for args, message in [
        ([], "FaceNet vggface2 weights not found: put 20180402-114759-vggface2.pt (facenet-pytorch's "
         f"release) at {tmp_path / 'torch' / 'checkpoints' / '20180402-114759-vggface2.pt'}"),
        (["--facenet-weights", "random", "--channels", 32],
         "model options: channels must be divisible by image_channels=3"),
        (["--facenet-weights", "random", "--bottleneck", 10], "--bottleneck does not go with --encoder facenet"),
        (["--data", str(photos)], f"got --data {str(photos)!r}; did you mean folder:{photos}?"),
    ]:
        code, _, err = run_pcae(monkeypatch, capsys, "train-ae", "--encoder", "facenet", "--data",
                                f"folder:{photos}", "--out", tmp_path / "r2", *args)
        err = err.strip()  # the faces progress bar (stderr) may leave a blank line
        assert code == 1 and err.startswith("error: ") and message in err and "\n" not in err, err
        assert not (tmp_path / "r2").exists()
