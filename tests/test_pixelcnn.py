"""Properties of the Gated PixelCNN: causality, no blind spot, conditioning, loss scale, bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig, bits_per_dim, nll_bits


def make_model(C=1, n_layers=2, cond_dim=0, spatial=False, size=(5, 6), k=3, k0=3, channels=12,
               gated=True, seed=0):
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(image_channels=C, n_layers=n_layers, channels=channels, kernel_size=k,
                         first_kernel_size=k0, cond_dim=cond_dim, spatial_cond=spatial,
                         image_size=size, gated=gated)
    return GatedPixelCNN(cfg).double()


def input_grad(model, C, H, W, c, i, j, h=None, seed=1):
    """Gradient of a random projection of the logits at (c, i, j) w.r.t. the float input image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, C, H, W, generator=g, dtype=torch.double).mul(2).sub(1).requires_grad_(True)
    logits = model.forward_float(x, h)  # (1, K, C, H, W)
    weights = torch.randn(logits.shape[1], generator=g, dtype=torch.double)
    (logits[0, :, c, i, j] * weights).sum().backward()
    return x.grad[0]  # (C, H, W)


def order(c, i, j, C, W):
    return (i * W + j) * C + c


def order_map(C, H, W):
    """(C, H, W) tensor: the generation step of every sub-pixel (raster order, R -> G -> B)."""
    c, i, j = torch.meshgrid(torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij")
    return order(c, i, j, C, W)


def positions(H, W, C):
    """First row, first column, middle, last pixel; every channel."""
    pixels = {(0, 0), (0, W - 1), (H // 2, 0), (H // 2, W // 2), (H - 1, W - 1), (1, W - 1)}
    return [(c, i, j) for (i, j) in sorted(pixels) for c in range(C)]


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_causality_no_gradient_from_the_future(C, conditional):
    H, W = 5, 6
    model = make_model(C=C, n_layers=3, cond_dim=4 if conditional else 0, spatial=conditional,
                       size=(H, W))
    h = torch.randn(1, 4, dtype=torch.double) if conditional else None
    for c, i, j in positions(H, W, C):
        grad = input_grad(model, C, H, W, c, i, j, h)
        future = order_map(C, H, W) >= order(c, i, j, C, W)
        leaks = (grad != 0) & future
        assert not leaks.any(), f"logit {(c, i, j)} sees future {leaks.nonzero().tolist()}"
        if order(c, i, j, C, W) > 0:
            assert (grad[~future] != 0).any(), f"logit {(c, i, j)} sees nothing at all"


@pytest.mark.parametrize("C", [1, 3])
def test_no_blind_spot_every_earlier_subpixel_is_seen(C):
    H, W = 5, 5
    # first layer 3x3 plus 5 more 3x3 layers: the receptive field covers the whole 5x5 past
    model = make_model(C=C, n_layers=5, size=(H, W))
    for c, i, j in positions(H, W, C):
        grad = input_grad(model, C, H, W, c, i, j)
        blind = (grad == 0) & (order_map(C, H, W) < order(c, i, j, C, W))
        assert not blind.any(), f"logit {(c, i, j)} blind to {blind.nonzero().tolist()}"


def test_up_right_pixels_are_seen_at_the_edge_of_the_receptive_field():
    # one gated 3x3 layer after a 3x3 first layer: (i-1, j+2) is reachable only through the
    # vertical stack's widening, exactly the wedge a single masked stack misses
    H, W = 4, 7
    model = make_model(n_layers=1, size=(H, W))
    grad = input_grad(model, 1, H, W, 0, 2, 2)
    assert grad[0, 1, 4] != 0 and grad[0, 0, 4] != 0


class SingleStackPixelCNN(nn.Module):
    """The original masked 3x3 PixelCNN (one stack), to show the blind spot the test detects."""

    def __init__(self, n_layers, channels=8):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(1, channels, 3, padding=1)]
            + [nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_layers)])
        self.out = nn.Conv2d(channels, 256, 1)
        for idx, conv in enumerate(self.convs):
            mask = torch.ones_like(conv.weight)
            mask[:, :, 1, 1 + (idx > 0):] = 0  # mask A excludes the centre, mask B keeps it
            mask[:, :, 2:] = 0
            self.register_buffer(f"mask{idx}", mask)

    def forward_float(self, x, h=None):
        for idx, conv in enumerate(self.convs):
            x = torch.relu(F.conv2d(x, conv.weight * getattr(self, f"mask{idx}"), conv.bias, padding=1))
        return self.out(x)[:, :, None]  # (B, K, 1, H, W)


def test_single_stack_masked_pixelcnn_has_a_blind_spot():
    H, W = 5, 5
    torch.manual_seed(0)
    model = SingleStackPixelCNN(n_layers=5).double()
    grad = input_grad(model, 1, H, W, 0, 4, 2)
    earlier = [(i, j) for i in range(H) for j in range(W) if i * W + j < 4 * W + 2]
    blind = [(i, j) for i, j in earlier if grad[0, i, j] == 0]
    assert (3, 4) in blind  # up and to the right of (4, 2), inside the 6-layer receptive field
    gated = make_model(n_layers=5, size=(H, W))
    gated_grad = input_grad(gated, 1, H, W, 0, 4, 2)
    assert all(gated_grad[0, i, j] != 0 for i, j in earlier)


@pytest.mark.parametrize("spatial", [False, True])
def test_conditioning_changes_the_first_logits(spatial):
    model = make_model(C=3, cond_dim=4, spatial=spatial)
    x = torch.randint(0, 256, (2, 3, 5, 6))
    h = torch.randn(2, 4, dtype=torch.double)
    a = model(x, h)[:, :, 0, 0, 0]
    b = model(x, h + 1.0)[:, :, 0, 0, 0]
    assert not torch.allclose(a, b)
    assert torch.allclose(a, model(x, h)[:, :, 0, 0, 0])


@pytest.mark.parametrize("gated", [True, False])
def test_every_parameter_of_a_conditional_model_gets_a_gradient(gated):
    model = make_model(C=3, cond_dim=4, spatial=True, gated=gated)
    x = torch.randint(0, 256, (2, 3, 5, 6))
    bits_per_dim(model(x, torch.randn(2, 4, dtype=torch.double)), x).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_output_head_scores_exactly_8_bits_per_dim():
    model = make_model(C=3)
    nn.init.zeros_(model.head2.weight)
    nn.init.zeros_(model.head2.bias)
    x = torch.randint(0, 256, (3, 3, 5, 6))
    assert bits_per_dim(model(x), x).item() == pytest.approx(8.0, abs=1e-6)
    assert torch.allclose(nll_bits(model(x), x), torch.full((3,), 8.0 * 90), atol=1e-4)


def test_bits_per_dim_matches_cross_entropy():
    logits = torch.randn(2, 256, 3, 4, 4)
    x = torch.randint(0, 256, (2, 3, 4, 4))
    expected = F.cross_entropy(logits, x) / torch.log(torch.tensor(2.0))
    assert bits_per_dim(logits, x).item() == pytest.approx(expected.item(), rel=1e-5)
    big = logits * 1e4  # log-softmax keeps huge logits finite
    assert torch.isfinite(bits_per_dim(big, x))


def test_tiny_model_overfits_four_images():
    torch.manual_seed(0)
    cfg = PixelCNNConfig(image_channels=1, n_layers=3, channels=32, first_kernel_size=5)
    model = GatedPixelCNN(cfg)
    x = torch.randint(0, 256, (4, 1, 6, 6))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = bits_per_dim(model(x), x).item()
    for step in range(300):
        opt.zero_grad()
        loss = bits_per_dim(model(x), x)
        if loss.item() < 0.5:
            break
        loss.backward()
        opt.step()
    assert start > 7.5 and loss.item() < 0.5, (start, loss.item(), step)


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (3, 11), (1, 1)])
def test_any_image_size(size):
    model = make_model(C=1, size=size)
    x = torch.randint(0, 256, (2, 1, *size))
    assert model(x).shape == (2, 256, 1, *size)


def test_non_power_of_two_levels():
    cfg = PixelCNNConfig(image_channels=3, levels=4, channels=6, n_layers=1)
    x = torch.randint(0, 4, (2, 3, 4, 4))
    assert GatedPixelCNN(cfg)(x).shape == (2, 4, 3, 4, 4)


@pytest.mark.parametrize("bad, match", [
    (dict(kernel_size=4), "kernel_size must be odd"),
    (dict(first_kernel_size=2), "first_kernel_size must be odd"),
    (dict(image_channels=3, channels=10), "channels must be divisible"),
    (dict(n_layers=-1), "n_layers must be >= 0"),
    (dict(spatial_cond=True), "spatial_cond needs cond_dim"),
    (dict(image_size=(0, 4)), "image_size"),
])
def test_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        PixelCNNConfig(**bad)


def test_bad_inputs_raise_before_compute():
    model = make_model(C=3, cond_dim=4, size=(5, 6))
    x = torch.randint(0, 256, (2, 3, 5, 6))
    h = torch.randn(2, 4, dtype=torch.double)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        model(x[:, :1], h)
    with pytest.raises(ValueError, match="x must hold integer levels"):
        model(x.double(), h)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 256\)"):
        model(x + 256, h)
    with pytest.raises(ValueError, match="h is required"):
        model(x)
    with pytest.raises(ValueError, match=r"h must have shape \(2, 4\)"):
        model(x, h[:, :3])
    with pytest.raises(ValueError, match="h must be None"):
        make_model(C=3)(x, h)
    spatial = make_model(C=1, cond_dim=4, spatial=True, size=(5, 6))
    with pytest.raises(ValueError, match="must be 5x6"):
        spatial(torch.zeros(1, 1, 4, 4, dtype=torch.long), h[:1])


def test_one_stack_is_causal_but_blind_up_and_to_the_right():
    """The original PixelCNN (one masked stack, stacks=1): nothing from the future, and the wedge up
    and to the right of the diagonal is never seen, however deep; the two stacks see all of it. The
    receptive-field figure of benchmarks/paper.py is eval.metrics.receptive_field of these."""
    from eval.metrics import receptive_field

    H, W = 7, 9
    for gated in (True, False):
        one = make_model(n_layers=6, size=(H, W), gated=gated)
        one.config = PixelCNNConfig(**{**one.config.__dict__, "stacks": 1})
        i, j = 5, 3
        seen = receptive_field(one, (i, j)) != 0
        past = order_map(1, H, W)[0] < order(0, i, j, 1, W)
        assert not (seen & ~past).any()  # causal
        blind = [(a, b) for a in range(i) for b in range(W) if b - j > i - a]
        assert blind and not any(seen[a, b] for a, b in blind), "the wedge up-right is seen"
        assert all(seen[a, b] for a in range(i) for b in range(W) if b - j <= i - a and b >= j - 6)
        two = make_model(n_layers=6, size=(H, W), gated=gated)
        assert (receptive_field(two, (i, j)) != 0)[past].all(), "two stacks have a blind spot"


def test_one_stack_and_relu_models_train_sample_and_round_trip():
    from pcae.sampling import sample

    cfg = PixelCNNConfig(n_layers=1, channels=6, image_size=(4, 4), gated=False, stacks=1)
    model = GatedPixelCNN(cfg)
    x = torch.randint(0, 256, (2, 1, 4, 4))
    bits_per_dim(model(x), x).backward()
    assert all(p.grad is not None for p in model.parameters())
    images = sample(model, 2, (1, 4, 4), generator=torch.Generator().manual_seed(0))  # naive, for one stack
    assert images.shape == (2, 1, 4, 4) and images.dtype == torch.long
    again = GatedPixelCNN(PixelCNNConfig(**cfg.__dict__))
    again.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="stacks must be 1 or 2, got 3"):
        PixelCNNConfig(stacks=3)
