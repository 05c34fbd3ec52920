"""The sample judge (eval.judge): training, caching, and figures with known answers."""
from __future__ import annotations

import pytest
import torch

from eval.judge import Judge, JudgeConfig, JudgeNet, class_accuracy, load_judge, sample_semantics, train_judge
from pcae.data import ImageDataset
from pcae.errors import PcaeError

FAST = JudgeConfig(channels=8, features=16, epochs=4, batch_size=32)


def stripes(n, seed=0, size=16):
    """Class k is a bright horizontal bar at rows 4k..4k+3 (k < 4) on noise: easy to tell apart."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 40, (n, 1, size, size), generator=g, dtype=torch.uint8)
    for i, k in enumerate(labels.tolist()):
        images[i, 0, 4 * k:4 * k + 4] = 220
    return images, labels


def dataset(n, seed):
    images, labels = stripes(n, seed)
    return ImageDataset(shape=(1, 16, 16), classes=["a", "b", "c", "d"], images=images, labels=labels,
                        info={"source": "stripes", "origin": f"test {seed}", "split": "?"})


@pytest.fixture(scope="module")
def judge():
    return train_judge(dataset(512, 0), dataset(128, 1), FAST)


def test_judge_learns_an_easy_task_and_records_its_ceiling(judge):
    assert judge.accuracy >= 0.95
    images, labels = stripes(64, seed=2)
    assert (judge.predict(images) == labels).float().mean() >= 0.95
    assert judge.features(images).shape == (64, FAST.features)


def test_sample_semantics_known_answers(judge):
    images, labels = stripes(16, seed=3)
    # samples that are copies of their source: agreement = the judge's accuracy on the sources,
    # ink equal to the sources', no diversity at all
    copies = images[:, None].expand(16, 3, 1, 16, 16)
    same = sample_semantics(judge, images, labels, copies)
    assert same["class_agreement"] == pytest.approx(same["source_accuracy"])
    assert same["ink_ratio"] == pytest.approx(1.0)
    assert same["diversity_rms"] == 0 and same["diversity_features"] == pytest.approx(0, abs=1e-5)
    assert same["samples"] == 48 and same["sources"] == 16
    assert same["diversity_features_between"] > 0
    # samples that show the next class: never their source's class
    shifted, _ = stripes(16, seed=3)
    shifted = torch.roll(shifted, 1, dims=0)  # image i now shows class (i - 1) % 4
    other = sample_semantics(judge, images, labels, shifted[:, None])
    assert other["class_agreement"] <= 0.1
    assert other["diversity_rms"] is None  # one sample per source
    # blank samples: no ink; two different samples per source: pixel RMS of their difference
    blank = sample_semantics(judge, images, labels, torch.zeros(16, 2, 1, 16, 16, dtype=torch.uint8))
    assert blank["ink"] == 0 and blank["ink_ratio"] == 0
    pair = torch.stack([torch.zeros(16, 1, 16, 16), torch.full((16, 1, 16, 16), 255.0)], 1).to(torch.uint8)
    assert sample_semantics(judge, images, labels, pair)["diversity_rms"] == pytest.approx(1.0)


def test_sample_semantics_checks_shapes(judge):
    images, labels = stripes(4)
    with pytest.raises(ValueError, match="samples must be"):
        sample_semantics(judge, images, labels, images)
    with pytest.raises(ValueError, match="labels must be"):
        sample_semantics(judge, images, labels[:2], images[:, None])


def test_class_accuracy_per_class(judge):
    images, labels = stripes(40, seed=4)
    right = class_accuracy(judge, images, labels)
    assert right["class_accuracy"] >= 0.95 and set(right["per_class"]) == {"a", "b", "c", "d"}
    wrong = class_accuracy(judge, images, (labels + 1) % 4)
    assert wrong["class_accuracy"] <= 0.1 and right["samples"] == 40


def test_unlabelled_data_has_no_judge():
    images, _ = stripes(64)
    data = ImageDataset(shape=(1, 16, 16), classes=None, images=images, labels=torch.full((64,), -1),
                        info={"source": "folder:x", "split": "train"})
    with pytest.raises(PcaeError, match="has no labels"):
        train_judge(data, data, FAST)


def test_load_judge_trains_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PCAE_CACHE_DIR", str(tmp_path))
    first = load_judge("fashion-mnist", image_size=8, config=FAST)
    files = list((tmp_path / "judges").glob("*.pt"))
    assert len(files) == 1 and first.info["cached"] == str(files[0])
    assert 0.3 < first.accuracy <= 1.0  # 10 classes at 8x8: well above chance (0.1)
    again = load_judge("fashion-mnist", image_size=8, config=FAST)
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(first.features(images), again.features(images))
    assert again.accuracy == first.accuracy
    # another image size is another judge
    load_judge("fashion-mnist", image_size=6, config=FAST)
    assert len(list((tmp_path / "judges").glob("*.pt"))) == 2
    # a torn cache file is replaced, not trusted
    files[0].write_bytes(b"not a checkpoint")
    rebuilt = load_judge("fashion-mnist", image_size=8, config=FAST)
    assert torch.equal(rebuilt.features(images), first.features(images))  # seeded: the same judge


def test_the_judge_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_judge(dataset(64, 0), dataset(32, 1), FAST)
    assert torch.equal(torch.rand(3), expected)


def test_judge_net_accepts_any_size_and_channels():
    net = JudgeNet(3, 5, FAST)
    assert net(torch.randint(0, 256, (2, 3, 13, 9), dtype=torch.uint8)).shape == (2, 5)
    assert isinstance(Judge(net, list("abcde"), 0.5, {}).predict(torch.zeros(2, 3, 8, 8)), torch.Tensor)


@pytest.mark.parametrize("decoder", ["pixelcnn", "deconv"])
def test_judge_autoencoder_scores_samples_or_reconstructions(judge, decoder):
    from encoders import build_encoder
    from eval.judge import judge_autoencoder
    from pcae.autoencoder import Autoencoder
    from pcae.deconv import DeconvConfig, DeconvDecoder
    from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig

    torch.manual_seed(0)
    encoder = build_encoder("conv", in_channels=1, image_size=(16, 16), bottleneck=3, channels=4)
    if decoder == "pixelcnn":
        dec = GatedPixelCNN(PixelCNNConfig(channels=4, n_layers=1, cond_dim=3, spatial_cond=True,
                                           image_size=(16, 16)))
    else:
        dec = DeconvDecoder(DeconvConfig(cond_dim=3, image_size=(16, 16), channels=4))
    model = Autoencoder(encoder, dec).train()
    images, labels = stripes(6, seed=5)
    out = judge_autoencoder(model, judge, images, labels, generator=torch.Generator().manual_seed(0))
    assert model.training  # left as it was
    assert out["decoder"] == decoder and out["sources"] == 6
    assert out["samples"] == (12 if decoder == "pixelcnn" else 6)
    assert 0 <= out["class_agreement"] <= 1 and out["source_accuracy"] >= 0.8
    assert (out["diversity_rms"] is None) == (decoder == "deconv")
