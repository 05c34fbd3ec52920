"""Sampling from a GatedPixelCNN, one sub-pixel at a time.

`sample()` draws C*H*W values in raster order (rows, then columns, then R -> G -> B inside a pixel).
Two samplers compute the same logits in different ways:

* `method="naive"` reruns the whole network on the whole image at every step: simple, obviously
  correct, and the reference the cached sampler is tested against.
* `method="cached"` (the default) is the fast generation scheme of [1] applied to the two-stack
  Gated PixelCNN [2]: every layer keeps the few activations a new pixel needs and only those are
  computed. It returns the same images as the naive sampler for the same seed.

Every sampler draws through `draw()`, which turns logits into levels with the Gumbel-max trick on
uniform noise taken from `generator` in a fixed order, so two samplers that compute the same logits
return the same images for the same seed.

How the cached sampler works (see pcae/pixelcnn.py for the masking it relies on)
---------------------------------------------------------------------------------
* Vertical stack, once per finished row r. Layer l's vertical pre-activation at row r needs only
  rows r-k//2 .. r of that layer's vertical input, so each layer keeps a strip of its last k//2+1
  input rows and the layer's `v_conv` weights are applied to that strip alone (one output row).
  The gated result is pushed onto the next layer's strip. Because the horizontal stack sees the
  vertical one shifted down a row, row r's pre-activation, through `link`, is the per-column term
  every pixel of row r+1 adds: it is computed once per row together with the conv bias and the
  conditioning bias of that row (`row_term`, (n, W, pre)).
* Horizontal stack, once per new pixel (i, j). Each layer keeps its horizontal inputs of row i so
  far. The contribution of the k//2 left neighbours (all final) is computed once per pixel into
  `base`; then, for each channel c of the pixel, one step runs every layer on this pixel alone:
  centre tap, gate, residual/skip 1x1, and the output head for channel c only. These are
  (n, in) @ (in, out) matmuls on weight matrices taken from the model's modules (masks applied).
* Inside a pixel the channel masks make channel c's logits depend only on channels < c of the
  pixel, whatever the other channels hold; and no feature of pixel (i, j) depends on its last
  channel (mask A in the first layer). So the features computed at the last step are exactly the
  full-image ones, and they are what is cached for the pixels to the right.
* On CUDA each per-channel step is captured once as a CUDA graph and replayed (`cuda_graphs`);
  the draw stays outside the graph, so the generator is consumed exactly as by the naive sampler.

Cost per image: the naive sampler runs C*H*W full forward passes; the cached one does the work of
about C forward passes restricted to one pixel per pixel, plus one vertical row per row.

References:
    [1] Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", 2017,
        arXiv:1704.06001.
    [2] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.

Shapes: n images, C image channels, H, W, K levels, p channels, pre = 2p (gated) or p.
Known limits: the cached sampler targets `GatedPixelCNN` only; CUDA graphs need a CUDA device.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pcae.pixelcnn import GatedLayer, GatedPixelCNN

Progress = Callable[[int, int], None]  # (rows done, rows in all)
Pick = Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (logits (n, K), c, i, j) -> (n,) levels


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Sample levels from logits (B, K) at `temperature`; 0 means argmax. Returns (B,) long."""
    if temperature == 0:
        return logits.argmax(dim=1)
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-300, 1.0 - 1e-16)))
    return (logits.double() / temperature + gumbel).argmax(dim=1)


def check_sample_args(model: GatedPixelCNN, n: int, image_shape, h, temperature) -> tuple[int, int, int]:
    """Validate sample() arguments before any compute; returns (C, H, W)."""
    cfg = model.config
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if len(image_shape) != 3 or image_shape[0] != cfg.image_channels or min(image_shape) < 1:
        raise ValueError(f"image_shape must be ({cfg.image_channels}, H, W), got {tuple(image_shape)}")
    if cfg.spatial_cond and tuple(image_shape[1:]) != cfg.image_size:
        raise ValueError(f"image_shape must end in {cfg.image_size} for a model with spatial_cond, "
                         f"got {tuple(image_shape)}")
    if cfg.cond_dim and (h is None or h.shape != (n, cfg.cond_dim)):
        got = None if h is None else tuple(h.shape)
        raise ValueError(f"h must have shape ({n}, {cfg.cond_dim}), got {got}")
    if not cfg.cond_dim and h is not None:
        raise ValueError("h must be None for an unconditional model (cond_dim=0)")
    return tuple(int(s) for s in image_shape)


@torch.no_grad()
def sample_naive(model, n, image_shape, h=None, temperature=1.0, generator=None,
                 progress: Progress | None = None) -> torch.Tensor:
    """The reference sampler: one full forward pass per sub-pixel."""
    C, H, W = image_shape
    device = next(model.parameters()).device
    x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
    for i in range(H):
        for j in range(W):
            for c in range(C):
                logits = model(x, h)[:, :, c, i, j]  # (n, K)
                x[:, c, i, j] = draw(logits, temperature, generator)
        if progress is not None:
            progress(i + 1, H)
    return x


def _row(bias: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """Row i of a conditioning bias (n, pre, H, W) as (n, pre, 1, W); a global (n, pre, 1, 1) as is."""
    if bias is None or bias.shape[2] == 1:
        return bias
    return bias[:, :, i:i + 1]


class _LayerCache:
    """One gated layer's weights as matrices, and what the cached sampler keeps for it."""

    def __init__(self, layer: GatedLayer, bias_v, bias_h, n: int, W: int):
        self.layer, self.bias_v, self.bias_h = layer, bias_v, bias_h
        self.first = layer.first
        self.pad = layer.v_conv.pad  # == layer.h_conv.pad == k//2
        wh = layer.h_conv.masked_weight()  # (pre, in, 1, pad+1); last tap = the pixel itself
        pre, cin = wh.shape[:2]
        self.w_centre = wh[:, :, 0, -1].t().contiguous()  # (in, pre)
        self.w_left = wh[:, :, 0, :-1].permute(2, 1, 0).reshape(self.pad * cin, pre).contiguous()
        self.w_out = layer.out.masked_weight()[:, :, 0, 0].t().contiguous()  # (p, p or 2p)
        self.b_out = layer.out.bias
        kw = dict(device=wh.device, dtype=wh.dtype)
        self.strip = torch.zeros(n, cin, self.pad + 1, W, **kw)  # last k//2+1 vertical input rows
        self.row = torch.zeros(n, W + self.pad, cin, **kw)  # horizontal inputs of this row, left-padded
        self.base = torch.zeros(n, pre, **kw)  # this pixel's left-neighbour + row term
        self.row_term = None  # (n, W, pre)

    def push_row(self, values: torch.Tensor) -> None:
        """Append a finished vertical input row (n, in, 1, W) to the strip, dropping the oldest."""
        self.strip[:, :, :-1] = self.strip[:, :, 1:].clone()
        self.strip[:, :, -1:] = values

    def vertical(self) -> torch.Tensor:
        """Vertical pre-activation of the strip's newest row, (n, pre, 1, W)."""
        conv = self.layer.v_conv
        return F.conv2d(F.pad(self.strip, (self.pad, self.pad, 0, 0)), conv.weight, conv.bias)

    def set_row_term(self, v_pre_above: torch.Tensor, i: int) -> None:
        """Per-column constant of row i: link(vertical pre-activation of row i-1) + biases."""
        term = self.layer.link(v_pre_above) + self.layer.h_conv.bias[:, None, None]  # (n, pre, 1, W)
        if self.bias_h is not None:
            term = term + _row(self.bias_h, i)
        self.row_term = term[:, :, 0].transpose(1, 2).contiguous()  # (n, W, pre)

    def set_base(self, j: int) -> None:
        window = self.row[:, j:j + self.pad].reshape(self.row.shape[0], -1)  # (n, pad*in), a view
        torch.addmm(self.row_term[:, j], window, self.w_left, out=self.base)


class _CachedRun:
    """State of one cached pass over n images of shape (C, H, W)."""

    def __init__(self, model: GatedPixelCNN, n: int, image_shape, h, cuda_graphs: bool):
        C, H, W = image_shape
        self.model, self.n, self.C, self.H, self.W = model, n, C, H, W
        K = model.config.levels
        w1 = model.head1.masked_weight()[:, :, 0, 0]  # (hidden, p)
        w2 = model.head2.masked_weight()[:, :, 0, 0]  # (C*K, hidden), rows ordered (C, K)
        self.w1, self.b1 = w1.t().contiguous(), model.head1.bias
        self.w2 = [w2[c * K:(c + 1) * K].t().contiguous() for c in range(C)]  # (hidden, K) each
        self.b2 = [model.head2.bias[c * K:(c + 1) * K] for c in range(C)]
        self.layers = [_LayerCache(layer, bv, bh, n, W)
                       for layer, (bv, bh) in zip(model.layers, model.condition(h))]
        device, dtype = w1.device, w1.dtype
        self.x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
        self.cur = torch.zeros(n, C, device=device, dtype=dtype)  # the pixel being drawn, scaled
        pre = self.layers[0].base.shape[1]
        self.v_pre = [torch.zeros(n, pre, 1, W, device=device, dtype=dtype) for _ in self.layers]
        self.graphs = _capture(self.step, C) if cuda_graphs else None

    def step(self, c: int):
        """Every layer on the current pixel alone, then the head for channel c.

        Returns logits (n, K) and the horizontal input of layers 1.. at this pixel, [(n, p)]."""
        xh, skip, inputs = self.cur, None, []
        for L in self.layers:
            h_pre = torch.addmm(L.base, xh, L.w_centre)  # (n, pre)
            out = torch.addmm(L.b_out, L.layer.gate(h_pre), L.w_out)  # (n, p) first, else (n, 2p)
            if L.first:
                xh = skip = out
            else:
                res, s = out.chunk(2, dim=1)
                xh, skip = xh + res, skip + s
            inputs.append(xh)
        hidden = F.relu(torch.addmm(self.b1, F.relu(skip), self.w1))
        return torch.addmm(self.b2[c], hidden, self.w2[c]), inputs[:-1]

    def advance_vertical(self, i: int) -> None:
        """Row i is finished: run the vertical stack on it for every layer."""
        self.layers[0].push_row(self.model.scale(self.x[:, :, i:i + 1]))
        for l, L in enumerate(self.layers):
            self.v_pre[l] = L.vertical()
            if l + 1 < len(self.layers):
                v_pre = self.v_pre[l] if L.bias_v is None else self.v_pre[l] + _row(L.bias_v, i)
                self.layers[l + 1].push_row(L.layer.gate(v_pre))

    def run(self, pick: Pick, progress: Progress | None = None) -> torch.Tensor:
        """Visit every sub-pixel in raster order; `pick` turns its logits into levels."""
        for i in range(self.H):
            if i > 0:
                self.advance_vertical(i - 1)
            for L, v_pre in zip(self.layers, self.v_pre):
                L.set_row_term(v_pre, i)
            for j in range(self.W):
                for L in self.layers:
                    L.set_base(j)
                self.cur.zero_()
                for c in range(self.C):
                    if self.graphs is None:
                        logits, inputs = self.step(c)
                    else:
                        graph, (logits, inputs) = self.graphs[c]
                        graph.replay()
                    level = pick(logits, c, i, j)
                    self.x[:, c, i, j] = level
                    self.cur[:, c] = self.model.scale(level)
                # the last step saw every channel the features may depend on: cache them
                self.layers[0].row[:, j + self.layers[0].pad] = self.cur
                for L, xh in zip(self.layers[1:], inputs):
                    L.row[:, j + L.pad] = xh
            if progress is not None:
                progress(i + 1, self.H)
        return self.x


def _capture(step, C: int):
    """Capture step(c) for each channel c as a CUDA graph; returns [(graph, static outputs)]."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (cuBLAS handles, workspaces) off the capture
        for c in range(C):
            step(c)
    torch.cuda.current_stream().wait_stream(side)
    graphs = []
    for c in range(C):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = step(c)
        graphs.append((graph, outputs))
    return graphs


def _use_graphs(model: GatedPixelCNN, cuda_graphs: bool | None) -> bool:
    device = next(model.parameters()).device
    if cuda_graphs is None:
        return device.type == "cuda"
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a model on a CUDA device, got {device}")
    return bool(cuda_graphs)


@torch.no_grad()
def sample_cached(model, n, image_shape, h=None, temperature=1.0, generator=None,
                  progress: Progress | None = None, cuda_graphs: bool | None = None) -> torch.Tensor:
    """The fast sampler [1]: cached activations, one pixel of work per step.

    `cuda_graphs`: replay each per-channel step as a CUDA graph; None means "when on CUDA"."""
    run = _CachedRun(model, n, image_shape, h, _use_graphs(model, cuda_graphs))
    return run.run(lambda logits, c, i, j: draw(logits, temperature, generator), progress)


@torch.no_grad()
def cached_logits(model: GatedPixelCNN, x: torch.Tensor, h: torch.Tensor | None = None,
                  cuda_graphs: bool | None = False) -> torch.Tensor:
    """The cached sampler's per-step logits with every sub-pixel forced to x (teacher forcing).

    For a correct sampler this equals model(x, h) up to rounding; the tests check that.
    Args:
        x: (B, C, H, W) integer levels. h: (B, cond_dim) or None.
    Returns:
        logits (B, K, C, H, W).
    """
    model.check_inputs(x, h)
    B, C, H, W = x.shape
    run = _CachedRun(model, B, (C, H, W), h, _use_graphs(model, cuda_graphs))
    logits = torch.empty(B, model.config.levels, C, H, W, device=x.device, dtype=run.cur.dtype)

    def force(step_logits, c, i, j):
        logits[:, :, c, i, j] = step_logits
        return x[:, c, i, j]

    run.run(force)
    return logits


SAMPLERS = {"cached": sample_cached, "naive": sample_naive}


@torch.no_grad()
def sample(model: GatedPixelCNN, n: int, image_shape, h: torch.Tensor | None = None,
           temperature: float = 1.0, generator: torch.Generator | None = None,
           method: str = "cached", progress: Progress | None = None) -> torch.Tensor:
    """Draw n images from p(x | h).

    Args:
        model: a GatedPixelCNN (put it on the device you want to sample on).
        n: number of images.
        image_shape: (C, H, W).
        h: (n, cond_dim) float for a conditional model, else None. Each row conditions one image.
        temperature: divides the logits; 0 gives the argmax path.
        generator: a torch.Generator on the model's device, for reproducible samples.
        method: a name in SAMPLERS ("cached", the fast default, or "naive", the reference).
        progress: called with (rows done, rows) after each finished row.
    Returns:
        (n, C, H, W) long levels in [0, levels).
    """
    image_shape = check_sample_args(model, n, image_shape, h, temperature)
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {sorted(SAMPLERS)}, got {method!r}")
    was_training = model.training
    model.eval()
    try:
        if h is not None:
            h = h.to(next(model.parameters()).device)
        return SAMPLERS[method](model, n, image_shape, h, temperature, generator, progress)
    finally:
        model.train(was_training)
