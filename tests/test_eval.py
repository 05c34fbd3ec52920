"""eval.metrics on cases with known answers: probes on separable and random h, k-NN on clusters,
conditioning gain of decoders that ignore or use h, bits aggregation, MSE/PSNR, active dims."""
from __future__ import annotations

import math

import pytest
import torch

from eval.metrics import (
    active_dims,
    bits_over_batches,
    conditioning_gain,
    derangement,
    h_variance,
    knn_accuracy,
    linear_probe,
    mse,
    participation_ratio,
    psnr,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blobs(n_per=50, K=4, D=6, spread=0.1, seed=0):
    """K tight clusters around random unit directions: (h, labels)."""
    g = gen(seed)
    centres = torch.nn.functional.normalize(torch.randn(K, D, generator=g), dim=1) * 5
    y = torch.arange(K).repeat_interleave(n_per)
    h = centres[y] + spread * torch.randn(len(y), D, generator=g)
    return h, y


# -- probes ------------------------------------------------------------------------------------

def test_linear_probe_separable_is_perfect():
    # labels are a linear function of h (which side of 3 hyperplanes, 8 classes), with a margin
    g = gen(1)
    h = torch.randn(600, 5, generator=g)
    h = h[(h[:, :3].abs() > 0.2).all(1)]
    y = (h[:, 0] > 0).long() + 2 * (h[:, 1] > 0).long() + 4 * (h[:, 2] > 0).long()
    out = linear_probe(h[:300], y[:300], h[300:], y[300:])
    assert out["train_accuracy"] == 1.0
    assert out["accuracy"] == 1.0
    assert out["classes"] == 8


def test_linear_probe_random_h_is_near_chance():
    g = gen(2)
    h = torch.randn(2000, 10, generator=g)
    y = torch.randint(0, 10, (2000,), generator=g)
    out = linear_probe(h[:1000], y[:1000], h[1000:], y[1000:])
    assert abs(out["accuracy"] - 0.1) < 0.05  # 1000 test labels: std of chance accuracy ~0.01


def test_linear_probe_ignores_constant_dims_and_scale():
    h, y = blobs()
    wide = torch.cat([h * 1e4, torch.full((len(h), 1), 3.0)], 1)  # scaled + a constant column
    out = linear_probe(wide, y, wide, y)
    assert out["accuracy"] == 1.0


def test_probe_bad_inputs():
    h, y = blobs()
    with pytest.raises(ValueError, match="labels must be >= 0"):
        linear_probe(h, y - 1, h, y)
    with pytest.raises(ValueError, match="same D"):
        linear_probe(h, y, h[:, :3], y)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_accuracy(h, y, h, y, k=0)


def test_knn_on_clusters_is_perfect():
    h, y = blobs(seed=3)
    ht, yt = blobs(n_per=10, seed=3)
    ht = ht + 0.05 * torch.randn(ht.shape, generator=gen(4))
    out = knn_accuracy(h, y, ht, yt, k=20)
    assert out == {"accuracy": 1.0, "k": 20}


def test_knn_is_cosine_and_caps_k():
    # same directions, wildly different norms: cosine ignores the norm
    h, y = blobs(n_per=5, seed=5)
    scale = torch.rand(len(h), 1, generator=gen(6)) * 100 + 0.01
    out = knn_accuracy(h * scale, y, h, y, k=100)
    assert out["k"] == len(h)  # capped at the database size
    assert knn_accuracy(h * scale, y, h, y, k=3)["accuracy"] == 1.0


def test_knn_tie_goes_to_nearest_class():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    query = torch.tensor([[0.2, 1.0], [1.0, 0.2]])
    assert knn_accuracy(train, y, query, torch.tensor([1, 0]), k=2)["accuracy"] == 1.0


# -- likelihood --------------------------------------------------------------------------------

def test_bits_over_batches_aggregates_per_image():
    x = torch.zeros(10, 1, 4, 4, dtype=torch.long)
    per_image = torch.arange(10, dtype=torch.float64)
    batches = [x[:3], x[3:7], x[7:]]
    state = {"i": 0}

    def nll(images):
        out = per_image[state["i"]:state["i"] + len(images)]
        state["i"] += len(images)
        return out

    out = bits_over_batches(nll, batches)
    assert out["images"] == 10
    assert out["bits_per_image"] == pytest.approx(4.5)
    assert out["bits_per_dim"] == pytest.approx(4.5 / 16)
    with pytest.raises(ValueError, match="at least one image"):
        bits_over_batches(nll, [])


def test_derangement_moves_everything():
    for n in (2, 3, 17):
        for seed in range(5):
            q = derangement(n, gen(seed))
            assert sorted(q.tolist()) == list(range(n))
            assert (q != torch.arange(n)).all()
    with pytest.raises(ValueError):
        derangement(1)


def _batches(n=24, B=8, D=3, seed=0):
    g = gen(seed)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g)
    h = torch.randn(n, D, generator=g)
    return [(x[i:i + B], h[i:i + B]) for i in range(0, n, B)]


def test_decoder_that_ignores_h_has_exactly_zero_gain():
    def nll(x, h):  # depends on x only
        return x.double().flatten(1).mean(1) / 10

    out = conditioning_gain(nll, _batches(), gen(0))
    assert out["shuffled_gain"] == 0.0 and out["zero_gain"] == 0.0
    assert out["images"] == out["shuffled_images"] == 24


def test_decoder_that_uses_h_has_positive_gain():
    # NLL = distance between x's mean and a code that equals it: the own h is best
    batches = [(x, x.double().flatten(1).mean(1, keepdim=True).float()) for x, _ in _batches(D=1)]

    def nll(x, h):
        return (x.double().flatten(1).mean(1) - h[:, 0].double()).abs() + 1.0

    out = conditioning_gain(nll, batches, gen(0))
    assert out["bits_per_image"] == pytest.approx(1.0)
    assert out["shuffled_gain"] > 1.0 and out["zero_gain"] > 1.0


def test_single_image_batches_skip_the_shuffle():
    def nll(x, h):
        return h.double().sum(1).abs()

    out = conditioning_gain(nll, [(x[:1], h[:1]) for x, h in _batches()], gen(0))
    assert out["shuffled_images"] == 0 and math.isnan(out["shuffled_gain"])
    assert out["images"] == 3


# -- pixels ------------------------------------------------------------------------------------

def test_mse_and_psnr_known_values():
    a = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    b = a.clone()
    b[1] = 255  # second image off by the full range everywhere
    m = mse(a, b)
    assert m.tolist() == [0.0, 1.0]
    assert psnr(0.0) == math.inf
    assert psnr(1.0) == pytest.approx(0.0)
    assert psnr(0.01) == pytest.approx(20.0)
    c = torch.full((1, 1, 2, 2), 51)  # 51/255 = 0.2 -> MSE 0.04 -> PSNR 13.98 dB
    assert psnr(mse(torch.zeros_like(c), c).item()) == pytest.approx(10 * math.log10(25))
    with pytest.raises(ValueError, match="same shape"):
        mse(a, b[:, :, :1])
    with pytest.raises(ValueError, match=">= 0"):
        psnr(-1.0)


# -- code space --------------------------------------------------------------------------------

def test_active_dims_and_variance():
    g = gen(7)
    stds = torch.tensor([3.0, 1.0, 0.5, 0.01, 0.0])  # variances 9, 1, 0.25, 1e-4, 0
    h = torch.randn(20000, 5, generator=g) * stds + 7.0
    var = h_variance(h)
    assert torch.allclose(var, stds.double() ** 2, rtol=0.05, atol=1e-5)
    assert active_dims(var) == 3
    assert active_dims(var, threshold=2.0) == 1
    assert active_dims(var, threshold=0.0) == 4


def test_participation_ratio():
    g = gen(8)
    iso = torch.randn(20000, 4, generator=g)
    assert participation_ratio(iso) == pytest.approx(4.0, rel=0.05)
    assert participation_ratio(iso * 1000) == pytest.approx(participation_ratio(iso))
    line = torch.randn(500, 1, generator=g) * torch.tensor([[1.0, 2.0, -1.0]])
    assert participation_ratio(line) == pytest.approx(1.0)
    assert participation_ratio(torch.ones(10, 3)) == 0.0
