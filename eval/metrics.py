"""Metrics for "what does the bottleneck keep?": pure functions over tensors, no models, no files.

Likelihood (how well a decoder models x, and how much it relies on h):
    bits_over_batches   per-image NLL in bits -> bits per image and bits/dim over a whole split.
    conditioning_gain   NLL(x | h shuffled across the batch) - NLL(x | h) and NLL(x | h = 0) - NLL(x | h)
                        in bits per image: the bits the decoder saves thanks to *this image's* h.
                        A decoder that ignores h scores exactly 0 on both.
Content (what h says about the labels):
    linear_probe        multinomial logistic regression on frozen, standardised h (full-batch L-BFGS,
                        small L2), fitted on the train split, accuracy on the test split [1].
    knn_accuracy        k-nearest-neighbour vote (cosine, k = 20) with FAISS, the train split as the
                        database [2].
Pixels (what h says about the exact image):
    mse, psnr           mean squared error on the [0, 1] scale and PSNR = 10 log10(1 / MSE) in dB.
Spread (how different samples of one h are):
    mean_pairwise_distance  mean L2 distance over the n(n-1)/2 pairs of each set of n vectors.
Use of the code space:
    h_variance, active_dims, participation_ratio
                        per-dimension variance of h over a split; the number of dimensions whose
                        variance exceeds a threshold ("active units", 0.01 as in [3]); and the
                        scale-free effective dimension (sum lambda)^2 / sum lambda^2 of h's covariance
                        spectrum.

References:
    [1] Alain and Bengio, "Understanding intermediate layers using linear classifier probes", 2016,
        arXiv:1610.01644.
    [2] Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", 2018
        (weighted k-NN evaluation of frozen features; here an unweighted majority vote).
    [3] Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", 2016, arXiv:1509.00519
        (a unit is active when Cov_x(E[u | x]) > 0.01).

Known limits: the conv encoder's h is linear and unscaled, so the absolute active-dims threshold
depends on its scale (participation_ratio does not). The shuffled gain needs batches of >= 2 images;
single-image batches are left out of it.

Shapes: B batch, C image channels, H, W image size, N images in a split, D = dim of h, K classes.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

NLL = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # nll(x (B, C, H, W), h (B, D)) -> (B,) bits


# ---------------------------------------------------------------------------------------------
# Likelihood


def bits_over_batches(nll: Callable[[torch.Tensor], torch.Tensor], batches: Iterable) -> dict:
    """Average a per-image NLL over every image of a split.

    Args:
        nll: images (B, C, H, W) -> (B,) NLL in bits per image.
        batches: yields images (B, C, H, W), or (images, ...) tuples whose first item is the images.
    Returns:
        {"bits_per_image", "bits_per_dim", "images"}; bits_per_dim = bits_per_image / (C*H*W).
    """
    total, n, dims = 0.0, 0, None
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        bits = nll(x)
        if bits.shape != (len(x),):
            raise ValueError(f"nll must return ({len(x)},) bits per image, got {tuple(bits.shape)}")
        total += bits.double().sum().item()
        n += len(x)
        dims = x[0].numel()
    if n == 0:
        raise ValueError("batches must hold at least one image, got none")
    return {"bits_per_image": total / n, "bits_per_dim": total / n / dims, "images": n}


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of range(n) with no fixed point (n >= 2): every image gets another's h.

    Built by taking a random order p and sending p[i] to p[i + 1] (cyclically).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 to move every item, got {n}")
    p = torch.randperm(n, generator=generator)
    q = torch.empty_like(p)
    q[p.roll(-1)] = p  # position p[i+1] takes item p[i]
    return q


@torch.no_grad()
def conditioning_gain(nll: NLL, batches: Iterable, generator: torch.Generator | None = None) -> dict:
    """How many bits per image the decoder saves by seeing this image's own h.

    Args:
        nll: (x (B, C, H, W), h (B, D)) -> (B,) NLL in bits per image.
        batches: yields (x, h) pairs; h is shuffled within each batch (a derangement), so batches
            should be drawn from the whole split (a few hundred images), not one class.
        generator: for the shuffles.
    Returns:
        {"bits_per_image": NLL(x | h), "shuffled_gain": mean NLL(x | h[perm]) - NLL(x | h),
         "zero_gain": mean NLL(x | 0) - NLL(x | h), "images", "shuffled_images"}; gains in bits
        per image, positive when h helps. A decoder that ignores h scores exactly 0.
    """
    base = zero = shuffled = 0.0
    n = n_shuffled = 0
    for x, h in batches:
        if h.dim() != 2 or len(h) != len(x):
            raise ValueError(f"h must have shape ({len(x)}, D), got {tuple(h.shape)}")
        b = nll(x, h).double()
        base += b.sum().item()
        zero += (nll(x, torch.zeros_like(h)).double() - b).sum().item()
        if len(x) >= 2:
            perm = derangement(len(x), generator).to(h.device)
            shuffled += (nll(x, h[perm]).double() - b).sum().item()
            n_shuffled += len(x)
        n += len(x)
    if n == 0:
        raise ValueError("batches must hold at least one image, got none")
    return {"bits_per_image": base / n, "zero_gain": zero / n,
            "shuffled_gain": shuffled / n_shuffled if n_shuffled else float("nan"),
            "images": n, "shuffled_images": n_shuffled}


# ---------------------------------------------------------------------------------------------
# Content


def _check_features(name: str, h: torch.Tensor, y: torch.Tensor) -> None:
    if h.dim() != 2 or y.dim() != 1 or len(h) != len(y) or len(h) == 0:
        raise ValueError(f"{name} must be h (N, D) and labels (N,) with N >= 1, "
                         f"got {tuple(h.shape)} and {tuple(y.shape)}")
    if (y < 0).any():
        raise ValueError(f"{name} labels must be >= 0 (a labelled split), got min {int(y.min())}")


def linear_probe(train_h: torch.Tensor, train_y: torch.Tensor, test_h: torch.Tensor,
                 test_y: torch.Tensor, l2: float = 1e-4, max_iter: int = 200) -> dict:
    """Multinomial logistic regression on frozen h: fit on train, accuracy on test.

    Features are standardised with the train split's mean and std (constant dimensions stay 0).
    The objective, mean cross-entropy + l2 * ||W||^2 (bias not penalised), is convex; full-batch
    L-BFGS with a strong-Wolfe line search in float64 minimises it.

    Args:
        train_h, test_h: (N, D) features. train_y, test_y: (N,) integer labels >= 0.
        l2: weight of the L2 penalty; small, so separable data is fitted exactly.
        max_iter: L-BFGS iterations.
    Returns:
        {"accuracy": test accuracy in [0, 1], "train_accuracy", "classes"}.
    """
    _check_features("train", train_h, train_y)
    _check_features("test", test_h, test_y)
    if train_h.shape[1] != test_h.shape[1]:
        raise ValueError(f"train and test h must have the same D, got {train_h.shape[1]} and {test_h.shape[1]}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    xs, ys = train_h.detach().double().cpu(), train_y.long().cpu()
    mean, std = xs.mean(0), xs.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant dims carry nothing: keep 0
    xs = (xs - mean) / std
    xt = (test_h.detach().double().cpu() - mean) / std
    K = int(max(ys.max(), test_y.max())) + 1
    W = torch.zeros(xs.shape[1], K, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ W + b, ys) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = ((xs @ W + b).argmax(1) == ys).double().mean().item()
        acc = ((xt @ W + b).argmax(1) == test_y.long().cpu()).double().mean().item()
    return {"accuracy": acc, "train_accuracy": train_acc, "classes": K}


def knn_accuracy(train_h: torch.Tensor, train_y: torch.Tensor, test_h: torch.Tensor,
                 test_y: torch.Tensor, k: int = 20) -> dict:
    """k-NN classification by cosine similarity with FAISS (exact inner product on unit vectors).

    Each test vector takes the majority label of its k nearest train vectors; a tie goes to the
    tied class whose first neighbour ranks highest.

    Args:
        train_h, test_h: (N, D) features (the train split is the database). train_y, test_y: (N,).
        k: neighbours (capped at the train size).
    Returns:
        {"accuracy": in [0, 1], "k": the k used}.
    """
    import faiss

    _check_features("train", train_h, train_y)
    _check_features("test", test_h, test_y)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if train_h.shape[1] != test_h.shape[1]:
        raise ValueError(f"train and test h must have the same D, got {train_h.shape[1]} and {test_h.shape[1]}")
    k = min(k, len(train_h))
    unit = lambda h: F.normalize(h.detach().float().cpu(), dim=1, eps=1e-12).contiguous().numpy()
    index = faiss.IndexFlatIP(train_h.shape[1])
    index.add(unit(train_h))
    _, ids = index.search(unit(test_h), k)  # (N, k), nearest first
    neighbours = train_y.long().cpu()[torch.from_numpy(ids).long()]  # (N, k) labels
    K = int(max(train_y.max(), test_y.max())) + 1
    votes = F.one_hot(neighbours, K).sum(1)  # (N, K)
    rank = torch.arange(k, 0, -1).view(1, k, 1)  # k for the nearest, 1 for the farthest
    first = (F.one_hot(neighbours, K) * rank).amax(1)  # (N, K) tie-break: earliest rank
    pred = (votes * (k + 1) + first).argmax(1)
    acc = (pred == test_y.long().cpu()).double().mean().item()
    return {"accuracy": acc, "k": k}


# ---------------------------------------------------------------------------------------------
# Pixels


def mse(a: torch.Tensor, b: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Per-image mean squared error of two batches of integer levels, on the [0, 1] scale.

    Args:
        a, b: (B, C, H, W) levels in [0, levels) (integer or float).
    Returns:
        (B,) float64.
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"a and b must be batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = (a.double() - b.double()) / (levels - 1)
    return diff.pow(2).flatten(1).mean(1)


def psnr(mse_value: float, peak: float = 1.0) -> float:
    """PSNR in dB for a mean squared error on a scale whose peak is `peak`; inf when mse is 0."""
    mse_value = float(mse_value)
    if mse_value < 0 or math.isnan(mse_value):
        raise ValueError(f"mse must be >= 0, got {mse_value}")
    if mse_value == 0:
        return math.inf
    return 10 * math.log10(peak ** 2 / mse_value)


# ---------------------------------------------------------------------------------------------
# Use of the code space


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """(B, n, D) -> (B,) mean L2 distance over the n(n-1)/2 pairs of each row's n vectors (n >= 2)."""
    n = x.shape[1]
    if n < 2:
        raise ValueError(f"mean_pairwise_distance needs n >= 2 vectors per set, got {n}")
    return torch.cdist(x, x).sum((1, 2)) / (n * (n - 1))


def h_variance(h: torch.Tensor) -> torch.Tensor:
    """Per-dimension variance of h over a split: (N, D) -> (D,) float64 (population variance)."""
    if h.dim() != 2 or len(h) < 1:
        raise ValueError(f"h must have shape (N, D) with N >= 1, got {tuple(h.shape)}")
    return h.detach().double().var(0, unbiased=False)


def active_dims(variance: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of dimensions whose variance exceeds `threshold`."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return int((variance > threshold).sum())


def participation_ratio(h: torch.Tensor) -> float:
    """Effective dimension of h: (sum lambda)^2 / sum lambda^2 over its covariance eigenvalues.

    1 when h varies along one direction, D when it varies equally along D orthogonal ones;
    unchanged by rescaling or rotating h. 0 for a constant h.
    """
    if h.dim() != 2 or len(h) < 2:
        raise ValueError(f"h must have shape (N, D) with N >= 2, got {tuple(h.shape)}")
    x = h.detach().double()
    x = x - x.mean(0)
    lam = torch.linalg.eigvalsh(x.T @ x / len(x)).clamp_min(0)
    denom = lam.pow(2).sum().item()
    return 0.0 if denom == 0 else lam.sum().item() ** 2 / denom


def receptive_field(model, pixel: tuple[int, int], h: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """How much each input pixel moves the logits of one output pixel: |d logits(c=0, i, j) / d x|,
    summed over the input channels, in float64 on a copy of the model (it is left as it was).

    A random projection of the 256 logits is differentiated (one backward pass) at a random input
    image; a zero means the pixel is not seen at all. Args: model a GatedPixelCNN; pixel (i, j).
    Returns: (H, W) float64 magnitudes.
    """
    C, (H, W) = model.config.image_channels, model.config.image_size
    i, j = pixel
    net = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, C, H, W, generator=g, dtype=torch.double).mul(2).sub(1).requires_grad_(True)
    logits = net.forward_float(x, None if h is None else h.double())  # (1, K, C, H, W)
    weights = torch.randn(logits.shape[1], generator=g, dtype=torch.double)
    (logits[0, :, 0, i, j] * weights).sum().backward()
    return x.grad[0].abs().sum(0)
