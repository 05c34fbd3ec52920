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
* Horizontal stack, once per new pixel (i, j). Each layer keeps a window of the horizontal inputs
  of the k//2 pixels to the left (zeros at the row start, like the conv's padding). Their
  contribution, plus the row term at column j, is computed once per pixel into `base`; then, for
  each channel c of the pixel, one step runs every layer on this pixel alone: centre tap, gate,
  residual/skip 1x1, and the output head for channel c only. These are (n, in) @ (in, out) matmuls
  on weight matrices taken from the model's modules, masks applied. When the pixel is drawn, its
  inputs slide into the windows.
* Inside a pixel the channel masks make channel c's logits depend only on channels < c of the
  pixel, whatever the other channels hold; and no feature of pixel (i, j) depends on its last
  channel (mask A in the first layer). So the features computed at the last step are exactly the
  full-image ones, and they are what is cached for the pixels to the right.
* All per-pixel state lives in buffers allocated once, so on CUDA each per-channel step and the
  window slide are captured once as CUDA graphs and replayed (`cuda_graphs`); the draw stays outside
  the graphs, so the generator is consumed exactly as by the naive sampler.

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
    # in place and without the no-op divide: the cached sampler calls this C*H*W times; the values
    # are those of (logits / T + Gumbel noise), Gumbel noise = -log(-log u), bit for bit
    neg_gumbel = u.clamp_(1e-300, 1.0 - 1e-16).log_().neg_().log_()
    scores = logits.double() if temperature == 1 else logits.double() / temperature
    return torch.sub(scores, neg_gumbel).argmax(dim=1)


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

    def __init__(self, layer: GatedLayer, bias_v, bias_h, n: int, W: int, row_term: torch.Tensor):
        self.layer, self.bias_v, self.bias_h = layer, bias_v, bias_h
        self.first = layer.first
        self.pad = layer.v_conv.pad  # == layer.h_conv.pad == k//2
        wh = layer.h_conv.masked_weight()  # (pre, in, 1, pad+1); last tap = the pixel itself
        pre, cin = wh.shape[:2]
        self.w_centre = wh[:, :, 0, -1].t().contiguous()  # (in, pre)
        # window layout: pixel j-pad first, its `in` channels contiguous
        self.w_left = wh[:, :, 0, :-1].permute(2, 1, 0).reshape(self.pad * cin, pre).contiguous()
        w_out = layer.out.masked_weight()[:, :, 0, 0]  # (p, p) first layer, else (2p, p): [res | skip]
        self.w_out, self.b_out = w_out.t().contiguous(), layer.out.bias
        p = w_out.shape[1]
        if not self.first:  # the residual and skip halves apart: the skip is accumulated in place
            self.w_res, self.b_res = self.w_out[:, :p].contiguous(), self.b_out[:p]
            self.w_skip, self.b_skip = self.w_out[:, p:].contiguous(), self.b_out[p:]
        kw = dict(device=wh.device, dtype=wh.dtype)
        # per-step buffers, written with out=: no allocation and fewer ops per sub-pixel step
        self.pre_buf = torch.zeros(n, pre, **kw)
        if layer.gated:
            self.f_view, self.g_view = self.pre_buf[:, :p], self.pre_buf[:, p:]
            self.tanh_buf, self.sigmoid_buf, self.gate_buf = (torch.zeros(n, p, **kw) for _ in range(3))
        self.res_buf = torch.zeros(n, p, **kw)
        self.strip = torch.zeros(n, cin, self.pad + 1, W, **kw)  # last k//2+1 vertical input rows
        self.row_term = row_term  # (n, W, pre) view: per-column constant of the current row
        self.term = None  # (n, pre) view: row_term at the current column
        self.window = torch.zeros(n, self.pad * cin, **kw)  # horizontal inputs of the pad pixels left
        self.base = torch.zeros(n, pre, **kw)  # term + left-neighbour contribution, per pixel
        self.output = torch.zeros(n, layer.out.in_channels, **kw)  # (n, p): next layer's x_h here

    def activate(self) -> torch.Tensor:
        """The gate of pre_buf (tanh(f) * sigmoid(g), or relu), into the layer's own buffers."""
        if self.layer.gated:
            torch.tanh(self.f_view, out=self.tanh_buf)
            torch.sigmoid(self.g_view, out=self.sigmoid_buf)
            return torch.mul(self.tanh_buf, self.sigmoid_buf, out=self.gate_buf)
        return self.pre_buf.relu_()

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
        self.row_term.copy_(term[:, :, 0].transpose(1, 2))

    def push_pixel(self, x_h: torch.Tensor) -> None:
        """Slide the window one pixel right: x_h (n, in) is the finished pixel's horizontal input."""
        if self.pad == 1:
            self.window.copy_(x_h)
        else:
            self.window.copy_(torch.cat([self.window[:, x_h.shape[1]:], x_h], dim=1))


class _CachedRun:
    """State of one cached pass over n images of shape (C, H, W).

    Everything a per-pixel step reads or writes lives in buffers allocated here once, so the steps
    can be captured as CUDA graphs and replayed."""

    def __init__(self, model: GatedPixelCNN, n: int, image_shape, h, cuda_graphs: bool):
        C, H, W = image_shape
        self.model, self.n, self.C, self.H, self.W = model, n, C, H, W
        K = model.config.levels
        w1 = model.head1.masked_weight()[:, :, 0, 0]  # (hidden, p)
        w2 = model.head2.masked_weight()[:, :, 0, 0]  # (C*K, hidden), rows ordered (C, K)
        self.w1, self.b1 = w1.t().contiguous(), model.head1.bias
        self.w2 = [w2[c * K:(c + 1) * K].t().contiguous() for c in range(C)]  # (hidden, K) each
        self.b2 = [model.head2.bias[c * K:(c + 1) * K] for c in range(C)]
        device, dtype = w1.device, w1.dtype
        biases = model.condition(h)
        pres = [layer.link.out_channels for layer in model.layers]
        # the row terms of all layers in one tensor: one copy per pixel selects a column for all
        self.row_terms = torch.zeros(n, W, sum(pres), device=device, dtype=dtype)
        self.terms = torch.zeros(n, sum(pres), device=device, dtype=dtype)
        self.layers, start = [], 0
        for layer, (bias_v, bias_h), pre in zip(model.layers, biases, pres):
            L = _LayerCache(layer, bias_v, bias_h, n, W, self.row_terms[:, :, start:start + pre])
            L.term = self.terms[:, start:start + pre]
            self.layers.append(L)
            start += pre
        p = model.layers[0].out.out_channels
        self.skip = torch.zeros(n, p, device=device, dtype=dtype)  # the skip sum of one step
        self.skip_bias = sum((L.b_skip for L in self.layers if not L.first),
                             torch.zeros(p, device=device, dtype=dtype))
        self.stacked = self._stack_layers(n, device, dtype)
        self.x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
        self.levels = torch.zeros(n, C, dtype=torch.long, device=device)  # the pixel being drawn
        self.v_pre = [torch.zeros(n, pre, 1, W, device=device, dtype=dtype) for pre in pres]
        self.graphs = _capture(self) if cuda_graphs else None

    def _stack_layers(self, n: int, device, dtype) -> bool:
        """When the layers after the first have a one-pixel window (kernel 3, so a layer's window
        is the previous layer's output at the pixel to the left), keep all outputs in one stacked
        buffer that doubles as those windows, and the left-neighbour bases in another: step 0 adds
        every such layer's left neighbour in one batched product, and nothing is copied when a pixel
        is done (the outputs of its last step are the next pixel's windows). False for other
        kernels: each layer is then handled on its own."""
        rest = self.layers[1:]
        if len(rest) < 2 or rest[0].pad != 1 or rest[0].window.shape != self.layers[0].output.shape:
            return False  # the layers after the first share one shape (GatedPixelCNN builds them so)
        kw = dict(device=device, dtype=dtype)
        k = len(rest)
        self.outputs = torch.zeros(k, *rest[0].output.shape, **kw)  # layers 0 .. k-1 = windows of 1 .. k
        self.bases = torch.zeros(k, *rest[0].base.shape, **kw)
        self.w_lefts = torch.stack([L.w_left for L in rest])  # (k, in, pre)
        pre = rest[0].base.shape[1]
        first = self.layers[0].term.shape[1]
        self.rest_terms = self.terms[:, first:].view(n, k, pre).transpose(0, 1)  # (k, n, pre) view
        for l, L in enumerate(self.layers[:-1]):
            L.output = self.outputs[l]
        for l, L in enumerate(rest):
            L.window, L.base = self.outputs[l], self.bases[l]
        return True

    def step(self, c: int) -> torch.Tensor:
        """Every layer on the current pixel alone, then the head for channel c: float64 logits (n, K).

        Channels >= c of `levels` are stale; the masks give them zero weight. Step 0 first adds the
        left neighbours' contribution to each layer's `base`; the others reuse it."""
        if c == 0 and self.stacked:
            L = self.layers[0]
            torch.addmm(L.term, L.window, L.w_left, out=L.base)
            torch.baddbmm(self.rest_terms, self.outputs, self.w_lefts, out=self.bases)  # windows
        elif c == 0:
            for L in self.layers:
                torch.addmm(L.term, L.window, L.w_left, out=L.base)
        xh, skip = self.model.scale(self.levels), self.skip  # (n, C), (n, p)
        for L in self.layers:
            torch.addmm(L.base, xh, L.w_centre, out=L.pre_buf)
            gated = L.activate()  # (n, p)
            if L.first:
                xh = torch.addmm(L.b_out, gated, L.w_out, out=L.output)
                torch.add(xh, self.skip_bias, out=skip)  # every later layer's skip bias, added once
            else:
                torch.addmm(L.b_res, gated, L.w_res, out=L.res_buf)
                xh = torch.add(xh, L.res_buf, out=L.output)
                skip.addmm_(gated, L.w_skip)
        hidden = F.relu(torch.addmm(self.b1, F.relu(skip), self.w1))
        return torch.addmm(self.b2[c], hidden, self.w2[c]).double()  # draw() works in float64

    def push_pixel(self) -> None:
        """The pixel is drawn: it joins every layer's window (outputs of the last step are final)."""
        if self.stacked:  # the other layers' windows are the outputs themselves
            self.layers[0].push_pixel(self.model.scale(self.levels))
            return
        inputs = [self.model.scale(self.levels)] + [L.output for L in self.layers[:-1]]
        for L, x_h in zip(self.layers, inputs):
            L.push_pixel(x_h)

    def start_row(self, i: int) -> None:
        """Run the vertical stack on finished row i-1, then set row i's terms and empty windows."""
        if i > 0:
            self.layers[0].push_row(self.model.scale(self.x[:, :, i - 1:i]))
            for l, L in enumerate(self.layers):
                self.v_pre[l] = L.vertical()
                if l + 1 < len(self.layers):
                    v_pre = self.v_pre[l] if L.bias_v is None else self.v_pre[l] + _row(L.bias_v, i - 1)
                    self.layers[l + 1].push_row(L.layer.gate(v_pre))
        for L, v_pre in zip(self.layers, self.v_pre):
            L.set_row_term(v_pre, i)
            L.window.zero_()

    def run(self, pick: Pick, progress: Progress | None = None) -> torch.Tensor:
        """Visit every sub-pixel in raster order; `pick` turns its logits into levels."""
        for i in range(self.H):
            self.start_row(i)
            for j in range(self.W):
                self.terms.copy_(self.row_terms[:, j])
                for c in range(self.C):
                    if self.graphs is None:
                        logits = self.step(c)
                    else:
                        graph, logits = self.graphs[c]
                        graph.replay()
                    self.levels[:, c] = pick(logits, c, i, j)
                self.x[:, :, i, j] = self.levels
                if self.graphs is None:
                    self.push_pixel()
                else:
                    self.graphs[-1][0].replay()
            if progress is not None:
                progress(i + 1, self.H)
        return self.x


def _capture(run: _CachedRun):
    """CUDA graphs of run.step(c) for each channel c, then of run.push_pixel: [(graph, output)].

    Called before the run starts: the warm-up writes only buffers that the run resets."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (cuBLAS handles, workspaces) off the capture
        for c in range(run.C):
            run.step(c)
        run.push_pixel()
    torch.cuda.current_stream().wait_stream(side)
    graphs = []
    for fn in [lambda c=c: run.step(c) for c in range(run.C)] + [run.push_pixel]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = fn()
        graphs.append((graph, output))
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
    logits = torch.empty(B, model.config.levels, C, H, W, device=x.device, dtype=run.terms.dtype)

    def force(step_logits, c, i, j):
        logits[:, :, c, i, j] = step_logits
        return x[:, c, i, j]

    run.run(force)
    return logits


SAMPLERS = {"cached": sample_cached, "naive": sample_naive}


def check_sampler(name: str | None) -> None:
    """PcaeError unless `name` is None (the default sampler) or a name in SAMPLERS."""
    from pcae.utils import PcaeError

    if name is not None and name not in SAMPLERS:
        raise PcaeError(f"unknown sampler {name!r} (available: {', '.join(sorted(SAMPLERS))})")


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
