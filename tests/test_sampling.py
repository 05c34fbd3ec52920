"""Sampling: the cached sampler is exact (same logits, same images as the naive one), and sample()
honours its contract (shape, range, seeds, temperature 0, conditioning per image, bad arguments)."""
import pytest
import torch

from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig
from pcae.sampling import SAMPLERS, cached_logits, sample


def make_model(C=1, n_layers=2, cond_dim=0, spatial=False, size=(5, 6), k=3, k0=3, channels=12,
               gated=True, levels=16, head_channels=0, seed=0):
    """A float64 model re-initialised with large weights, so logits are far from flat."""
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(image_channels=C, n_layers=n_layers, channels=channels, kernel_size=k,
                         first_kernel_size=k0, cond_dim=cond_dim, spatial_cond=spatial,
                         image_size=size, gated=gated, levels=levels, head_channels=head_channels)
    model = GatedPixelCNN(cfg).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 1.5 if name.startswith("head2") else 0.4)
    return model


CONFIGS = {
    "C1": dict(C=1),
    "C1-global-k5": dict(C=1, cond_dim=4, k=5, k0=7, size=(4, 7)),
    "C3-global-k0=7": dict(C=3, cond_dim=4, k0=7),
    "C3-spatial-k5": dict(C=3, cond_dim=4, spatial=True, k=5, k0=5, size=(5, 6)),
    "C3-ungated-k5": dict(C=3, gated=False, k=5, k0=3, size=(4, 7)),
    "C2-first-layer-only": dict(C=2, n_layers=0, channels=8, cond_dim=3, k0=5),
    "C3-256-levels-head": dict(C=3, levels=256, head_channels=6, n_layers=3, size=(3, 4)),
}


def inputs(cfg, n=3, seed=1):
    model = make_model(**cfg)
    c = model.config
    g = torch.Generator().manual_seed(seed)
    shape = (c.image_channels, *(cfg.get("size", (5, 6))))
    h = torch.randn(n, c.cond_dim, generator=g, dtype=torch.double) if c.cond_dim else None
    x = torch.randint(0, c.levels, (n, *shape), generator=g)
    return model, shape, h, x


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_logits_equal_model_logits(name):
    model, _, h, x = inputs(CONFIGS[name])
    want = model(x, h)  # (B, K, C, H, W)
    assert want.std() > 1.0, "weights too small: logits nearly flat, the test would prove little"
    got = cached_logits(model, x, h)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_sampler_returns_the_naive_images(name):
    model, shape, h, _ = inputs(CONFIGS[name])
    results = {}
    for method in ("naive", "cached"):
        g = torch.Generator().manual_seed(7)
        x = sample(model, 3, shape, h, temperature=1.0, generator=g, method=method)
        results[method] = (x, g.get_state())
    naive, cached = results["naive"], results["cached"]
    assert torch.equal(naive[0], cached[0])
    assert torch.equal(naive[1], cached[1]), "the two samplers consumed the generator differently"
    assert naive[0].unique().numel() > 3, "degenerate samples"
    # the per-step logits of the naive path, recomputed on the sampled images, match too
    torch.testing.assert_close(cached_logits(model, cached[0], h), model(naive[0], h),
                               rtol=1e-10, atol=1e-10)


def test_cached_is_the_default_and_both_are_registered():
    assert set(SAMPLERS) == {"cached", "naive"}
    import inspect
    assert inspect.signature(sample).parameters["method"].default == "cached"


def test_sample_shape_dtype_range_and_progress():
    model, shape, h, _ = inputs(CONFIGS["C3-global-k0=7"])
    rows = []
    x = sample(model, 3, shape, h, generator=torch.Generator().manual_seed(0),
               progress=lambda done, total: rows.append((done, total)))
    assert x.shape == (3, *shape) and x.dtype == torch.long
    assert 0 <= int(x.min()) and int(x.max()) < model.config.levels
    assert rows == [(i + 1, shape[1]) for i in range(shape[1])]


def test_seed_reproduces_and_other_seed_differs():
    model, shape, _, _ = inputs(CONFIGS["C3-ungated-k5"])
    a, b, c = (sample(model, 2, shape, generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_temperature_zero_is_the_argmax_path_and_draws_no_noise():
    model, shape, h, _ = inputs(CONFIGS["C3-spatial-k5"])
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    x = sample(model, 3, shape, h, temperature=0.0, generator=g)
    assert torch.equal(g.get_state(), state)
    # every sub-pixel is the most likely value given the ones before it
    assert torch.equal(model(x, h).argmax(dim=1), x)
    assert torch.equal(x, sample(model, 3, shape, h, temperature=0.0, method="naive"))


def test_each_image_follows_its_own_h():
    model, shape, h, _ = inputs(CONFIGS["C3-global-k0=7"], n=2)
    both = sample(model, 2, shape, h, temperature=0.0)
    for b in range(2):
        assert torch.equal(both[b], sample(model, 1, shape, h[b:b + 1], temperature=0.0)[0])
    assert not torch.equal(both[0], both[1])


def test_low_temperature_concentrates_on_the_argmax():
    model, shape, _, _ = inputs(CONFIGS["C1"])
    greedy = sample(model, 1, shape, temperature=0.0)
    cold = sample(model, 4, shape, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, greedy.expand_as(cold))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be"),
    (dict(temperature=-1.0), "temperature"),
    (dict(image_shape=(1, 5, 6)), "image_shape"),
    (dict(image_shape=(3, 4, 6)), "image_shape"),  # spatial_cond ties the model to 5x6
    (dict(h=None), "h must have shape"),
    (dict(h=torch.zeros(2, 4, dtype=torch.double)), "h must have shape"),
    (dict(method="fast"), "method"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    model, shape, h, _ = inputs(CONFIGS["C3-spatial-k5"])
    args = dict(n=3, image_shape=shape, h=h) | kwargs
    with pytest.raises(ValueError, match=match):
        sample(model, **args)


def test_unconditional_model_rejects_h_and_cpu_rejects_cuda_graphs():
    model, shape, _, x = inputs(CONFIGS["C1"])
    with pytest.raises(ValueError, match="h must be None"):
        sample(model, 3, shape, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="cuda_graphs"):
        cached_logits(model, x, cuda_graphs=True)


@pytest.mark.parametrize("name", ["C1-global-k5", "C3-spatial-k5"])
def test_guidance_draws_from_the_guided_logits_alike_in_both_samplers(name):
    """With guidance w each level is drawn from l(x|h) + w (l(x|h) - l(x|0)): both samplers give the
    same images, and they are those of a model whose logits are that combination."""
    model, shape, h, _ = inputs(CONFIGS[name])
    w = 1.5
    drawn = {m: sample(model, 3, shape, h, 1.0, torch.Generator().manual_seed(3), method=m, guidance=w)
             for m in ("naive", "cached")}
    assert torch.equal(drawn["naive"], drawn["cached"])

    class Guided(torch.nn.Module):  # the guided logits as one model, sampled without guidance
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def forward(self, x, h):
            given, free = model(x, h), model(x, torch.zeros_like(h))
            return given + w * (given - free)

    want = sample(Guided(), 3, shape, h, 1.0, torch.Generator().manual_seed(3), method="naive")
    assert torch.equal(drawn["naive"], want)
    plain = sample(model, 3, shape, h, 1.0, torch.Generator().manual_seed(3))
    assert not torch.equal(plain, drawn["cached"]), "guidance changed nothing"
    assert torch.equal(plain, sample(model, 3, shape, h, 1.0, torch.Generator().manual_seed(3), guidance=0.0))


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_guidance_is_refused(bad):
    model, shape, h, _ = inputs(CONFIGS["C1-global-k5"])
    with pytest.raises(ValueError, match="guidance"):
        sample(model, 3, shape, h, guidance=bad)


def test_guidance_needs_a_conditional_model():
    model, shape, _, _ = inputs(CONFIGS["C1"])
    with pytest.raises(ValueError, match="conditional"):
        sample(model, 3, shape, None, guidance=1.0)
