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
  input rows and the layer's `v_conv` weights are applied to that strip alone (one output row, as
  one matrix product: the strip is laid out so that each column's taps are contiguous).
  The gated result is pushed onto the next layer's strip. Because the horizontal stack sees the
  vertical one shifted down a row, row r's pre-activation, through `link`, is the per-column term
  every pixel of row r+1 adds: it is computed once per row together with the conv bias and the
  conditioning bias of that row (`row_term`, (n, W, pre)).
* Horizontal stack, once per new pixel (i, j). Each layer keeps a window of the horizontal inputs
  of the k//2 pixels to the left (zeros at the row start, like the conv's padding). Their
  contribution, plus the row term at column j, is computed once per pixel into `base`; then, for
  each channel c of the pixel, one step runs every layer on this pixel alone: centre tap, gate,
  residual/skip 1x1, and the output head for channel c only. These are (n, in) @ (in, out) matmuls
  on weight matrices taken from the model's modules, masks applied. A step is about 50 small ops,
  so the weights are rearranged once to need fewer: the first layer's centre weights take the
  level scaling into them, a gated layer's gate is one tanh and one addcmul (the g half kept halved:
  sigmoid(g) = (1 + tanh(g/2)) / 2), the residual bias rides as one more weight row, and all layers'
  skip 1x1s are one product. When the pixel is drawn, its inputs slide into the windows.
* Inside a pixel the channel masks make channel c's logits depend only on channels < c of the
  pixel, whatever the other channels hold; and no feature of pixel (i, j) depends on its last
  channel (mask A in the first layer). So the features computed at the last step are exactly the
  full-image ones, and they are what is cached for the pixels to the right.
* All per-pixel state lives in buffers allocated once, so on CUDA each per-channel step and the
  window slide are captured once as CUDA graphs and replayed (`cuda_graphs`); the draw stays outside
  the graphs, so the generator is consumed exactly as by the naive sampler. On the CPU the noise of a
  row's draws is taken in one call, which a CPU generator fills in the same order.

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

from pcae.errors import PcaeError
from pcae.machine import check_fits
from pcae.options import check_guidance
from pcae.pixelcnn import GatedLayer, GatedPixelCNN

Progress = Callable[[int, int], None]  # (rows done, rows in all)
Pick = Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (logits (n, K), c, i, j) -> (n,) levels


def neg_gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Minus Gumbel noise, log(-log u), for uniform u taken from `generator`: float64 of `shape`."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return u.clamp_(1e-300, 1.0 - 1e-16).log_().neg_().log_()  # in place: called C*H*W times


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
         noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample levels from logits (B, K) at `temperature`; 0 means argmax. Returns (B,) long.

    `noise`: this draw's neg_gumbel((B, K)) when the caller has drawn it already."""
    if temperature == 0:
        return logits.argmax(dim=1)
    if noise is None:
        noise = neg_gumbel(logits.shape, generator, logits.device)
    # without the no-op divide: the values are those of (logits / T + Gumbel noise), bit for bit
    scores = logits.double() if temperature == 1 else logits.double() / temperature
    return torch.sub(scores, noise).argmax(dim=1)


def _row_draw(temperature: float, generator: torch.Generator | None, n: int, C: int, W: int, K: int) -> Pick:
    """draw() for the cached sampler on the CPU, the noise of a row's W*C draws taken in one call.

    A CPU generator fills a tensor in order, so one (W*C, n, K) call consumes it exactly as W*C
    calls of (n, K) do: the images stay the naive sampler's (the tests compare them)."""
    noise = None

    def pick(logits: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        nonlocal noise
        if c == 0 and j == 0:
            noise = neg_gumbel((W * C, n, K), generator, logits.device)
        return draw(logits, temperature, generator, noise[j * C + c])

    return pick


def check_sample_args(model: GatedPixelCNN, n: int, image_shape, h, temperature,
                      guidance: float = 0.0) -> tuple[int, int, int]:
    """Validate sample() arguments before any compute; returns (C, H, W)."""
    cfg = model.config
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    check_guidance(guidance)
    if guidance and not cfg.cond_dim:
        raise ValueError("guidance needs a conditional model (cond_dim > 0)")
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
                 progress: Progress | None = None, guidance: float = 0.0) -> torch.Tensor:
    """The reference sampler: one full forward pass per sub-pixel."""
    C, H, W = image_shape
    device = next(model.parameters()).device
    h, rows = _with_unconditioned(h, n, guidance)
    pick = _guided(lambda logits, c, i, j: draw(logits, temperature, generator), n, guidance)
    x = torch.zeros(rows, C, H, W, dtype=torch.long, device=device)
    for i in range(H):
        for j in range(W):
            for c in range(C):
                logits = model(x, h)[:, :, c, i, j]  # (rows, K)
                x[:, c, i, j] = pick(logits, c, i, j)
        if progress is not None:
            progress(i + 1, H)
    return x[:n]


def _with_unconditioned(h: torch.Tensor | None, n: int, guidance: float) -> tuple[torch.Tensor | None, int]:
    """h and the batch to run: with guidance, n more rows given h = 0 (no one in particular)."""
    if not guidance:
        return h, n
    return torch.cat([h, torch.zeros_like(h)]), 2 * n


def _guided(pick: Pick, n: int, guidance: float) -> Pick:
    """`pick` of guided logits [3]: with guidance w, the first n rows' logits l(x | h) pushed away
    from the last n rows' l(x | 0), l(x | h) + w (l(x | h) - l(x | 0)); each level drawn goes to
    both copies of its image."""
    if not guidance:
        return pick

    def guided(logits: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        given, free = logits[:n], logits[n:]
        return pick(given + guidance * (given - free), c, i, j).repeat(2)

    return guided


def _row(bias: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """Row i of a conditioning bias (n, H, W, pre) as (n, W, pre); a global (n, 1, 1, pre) as (n, 1, pre)."""
    if bias is None:
        return None
    return bias[:, i if bias.shape[1] > 1 else 0]


def _gate(layer: GatedLayer, x: torch.Tensor) -> torch.Tensor:
    """layer.gate over the last dimension (the sampler keeps rows as (n, W, pre))."""
    if layer.gated:
        f, g = x.chunk(2, dim=-1)
        return torch.tanh(f) * torch.sigmoid(g)
    return F.relu(x)


class _LayerCache:
    """One gated layer's weights as matrices, and what the cached sampler keeps for it."""

    def __init__(self, layer: GatedLayer, bias_v, bias_h, n: int, W: int, row_term: torch.Tensor):
        self.layer = layer
        # conditioning biases as (n, H, W, pre) views, so that a row is (n, W, pre) like the row terms
        self.bias_v, self.bias_h = (None if b is None else b.permute(0, 2, 3, 1) for b in (bias_v, bias_h))
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
        kw = dict(device=wh.device, dtype=wh.dtype)
        # A gated layer's gate in two ops. sigmoid(g) = (1 + tanh(g/2)) / 2, so the g half of the
        # pre-activation is kept halved (its weights and terms scaled by 1/2): one tanh over the whole
        # pre-activation gives t_f = tanh(f) and t_g = tanh(g/2), and one addcmul gives
        # t_f + t_f * t_g = 2 * gate. The 1x1 after the gate takes the factor 2 back.
        self.pre_scale = None
        if layer.gated:
            self.pre_scale = torch.cat([torch.ones(p, **kw), torch.full((p,), 0.5, **kw)])
            self.w_centre, self.w_left = self.w_centre * self.pre_scale, self.w_left * self.pre_scale
            self.w_out = self.w_out * 0.5
        if not self.first:  # the residual 1x1 with its bias as one more row: x_h + [gate, 1] @ w_res
            self.w_res = torch.cat([self.w_out[:, :p], self.b_out[None, :p]]).contiguous()  # (p+1, p)
            self.w_skip = torch.cat([self.w_out[:, p:], self.b_out[None, p:]])  # (p+1, p), stacked later
        # per-step buffers, written with out=: no allocation and fewer ops per sub-pixel step
        self.pre_buf = torch.zeros(n, pre, **kw)
        self.t_f, self.t_g = self.pre_buf[:, :p], self.pre_buf[:, p:]  # after the tanh (gated layers)
        self.gate = torch.zeros(n, p, **kw)  # gate output; a view into the run's stacked gates later
        self.gate_one = None  # (n, p+1) view: [gate, 1], what the residual 1x1 reads
        self.term_offset = None  # a per-channel constant added to every row term (the first layer)
        # the vertical stack row by row as one matrix product: the strip keeps the last k//2+1
        # vertical input rows as (n, column, row, in), zero columns on both sides (the conv's padding),
        # so the taps of output column j are one contiguous run, columns j .. j+k-1
        wv = layer.v_conv.weight  # (pre, in, k//2+1, k)
        k = wv.shape[3]
        self.w_v = wv.permute(3, 2, 1, 0).reshape(-1, pre).contiguous()  # rows ordered (column, row, in)
        self.b_v = layer.v_conv.bias
        self.strip = torch.zeros(n, W + 2 * self.pad, self.pad + 1, cin, **kw)
        st = self.strip.stride()
        self.taps = self.strip.as_strided((n, W, k, self.pad + 1, cin), (st[0], st[1], st[1], st[2], st[3]))
        self.cols = torch.zeros(n * W, self.w_v.shape[0], **kw)  # the taps, one row per column
        self.v_pre = torch.zeros(n, W, pre, **kw)  # vertical pre-activation of the last finished row
        self.w_link = layer.link.weight[:, :, 0, 0].t().contiguous()  # (pre, pre)
        self.b_term = layer.link.bias + layer.h_conv.bias
        self.row_term = row_term  # (n, W, pre) view: per-column constant of the current row
        self.term = None  # (n, pre) view: row_term at the current column
        self.window = torch.zeros(n, self.pad * cin, **kw)  # horizontal inputs of the pad pixels left
        self.base = torch.zeros(n, pre, **kw)  # term + left-neighbour contribution, per pixel
        self.output = torch.zeros(n, layer.out.in_channels, **kw)  # (n, p): next layer's x_h here

    def push_row(self, values: torch.Tensor) -> None:
        """Append a finished vertical input row (n, W, in) to the strip, dropping the oldest."""
        self.strip[:, :, :-1] = self.strip[:, :, 1:].clone()
        self.strip[:, self.pad:self.strip.shape[1] - self.pad, -1] = values

    def vertical(self) -> torch.Tensor:
        """Vertical pre-activation of the strip's newest row into `v_pre`, (n, W, pre)."""
        self.cols.view(self.taps.shape).copy_(self.taps)
        torch.addmm(self.b_v, self.cols, self.w_v, out=self.v_pre.view(self.cols.shape[0], -1))
        return self.v_pre

    def set_row_term(self, i: int) -> None:
        """Per-column constant of row i: link(vertical pre-activation of row i-1) + biases."""
        n, W, pre = self.v_pre.shape
        term = torch.addmm(self.b_term, self.v_pre.view(n * W, pre), self.w_link).view(n, W, pre)
        if self.bias_h is not None:
            term = term + _row(self.bias_h, i)
        if self.pre_scale is not None:
            term = term * self.pre_scale
        if self.term_offset is not None:  # the offset is made from the scaled weights already
            term = term + self.term_offset
        self.row_term.copy_(term)

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
        kw = dict(device=device, dtype=dtype)
        # the first layer reads the levels as they are drawn: its centre weights take the scaling
        # x * s - 1 into them (x @ (s w) - sum of w's rows), so a step starts with no conversion
        first = self.layers[0]
        first.term_offset = -first.w_centre.sum(0)
        first.w_centre = first.w_centre * (2.0 / (K - 1))
        # every later layer's gate, with a column of ones, in one (n, layers, p+1) buffer: the
        # residual 1x1 of a layer reads its [gate, 1] row (bias included), and the skip sum of all
        # layers, biases included, is one product at the end of the step
        rest, p = self.layers[1:], first.output.shape[1]
        self.gates = torch.zeros(n, len(rest), p + 1, **kw)
        self.gates[:, :, p] = 1.0
        for l, L in enumerate(rest):
            L.gate_one, L.gate = self.gates[:, l], self.gates[:, l, :p]
        self.w_skip = torch.cat([L.w_skip for L in rest] + [torch.zeros(0, p, **kw)])  # (layers*(p+1), p)
        self.skip = torch.zeros(n, p, **kw)
        self.hidden = torch.zeros(n, self.w1.shape[1], **kw)
        self.logits = [torch.zeros(n, K, **kw) for _ in range(C)]
        self.stacked = self._stack_layers(n, device, dtype)
        # what step() reads per layer, looked up once (a step is ~50 small ops: lookups add up)
        self.plan = [(L.first, L.layer.gated, L.base, L.w_centre, L.pre_buf, L.t_f, L.t_g, L.gate,
                      L.gate_one, L.w_out if L.first else L.w_res, L.b_out, L.output) for L in self.layers]
        self.gates_flat = self.gates.view(n, -1)
        self.x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
        self.levels = torch.zeros(n, C, **kw)  # the pixel being drawn, as levels in the model's dtype
        self.level = [self.levels[:, c] for c in range(C)]
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
        xh = self.levels  # (n, C) levels: the first layer's weights scale them
        addmm = torch.addmm
        for first, gated, base, w_centre, pre, t_f, t_g, gate, gate_one, w, b, output in self.plan:
            addmm(base, xh, w_centre, out=pre)
            if gated:  # 2 tanh(f) sigmoid(g) = t_f (1 + t_g), the g half kept halved (_LayerCache)
                pre.tanh_()
                torch.addcmul(t_f, t_f, t_g, out=gate)
            else:
                torch.clamp(pre, min=0, out=gate)
            if first:
                xh = addmm(b, gate, w, out=output)
            else:  # x_h + res(gate), the residual's bias in w's last row (gate_one = [gate, 1])
                xh = addmm(xh, gate_one, w, out=output)
        # the skip sum: the first layer's output plus every later layer's skip 1x1, in one product
        addmm(self.layers[0].output, self.gates_flat, self.w_skip, out=self.skip).relu_()
        addmm(self.b1, self.skip, self.w1, out=self.hidden).relu_()
        return addmm(self.b2[c], self.hidden, self.w2[c], out=self.logits[c]).double()  # draw() is float64

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
            self.layers[0].push_row(self.model.scale(self.x[:, :, i - 1]).transpose(1, 2))
            for l, L in enumerate(self.layers):
                v_pre = L.vertical()
                if l + 1 < len(self.layers):
                    if L.bias_v is not None:
                        v_pre = v_pre + _row(L.bias_v, i - 1)
                    self.layers[l + 1].push_row(_gate(L.layer, v_pre))
        for L in self.layers:
            L.set_row_term(i)
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
                    self.level[c].copy_(pick(logits, c, i, j))
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
                  progress: Progress | None = None, guidance: float = 0.0,
                  cuda_graphs: bool | None = None) -> torch.Tensor:
    """The fast sampler [1]: cached activations, one pixel of work per step.

    `cuda_graphs`: replay each per-channel step as a CUDA graph; None means "when on CUDA"."""
    h, rows = _with_unconditioned(h, n, guidance)
    run = _CachedRun(model, rows, image_shape, h, _use_graphs(model, cuda_graphs))
    C, H, W = image_shape
    if temperature > 0 and run.x.device.type == "cpu":
        pick = _row_draw(temperature, generator, n, C, W, model.config.levels)
    else:  # a CUDA generator's offsets depend on the call sizes: one call per draw, as naive
        pick = lambda logits, c, i, j: draw(logits, temperature, generator)  # noqa: E731
    return run.run(_guided(pick, n, guidance), progress)[:n]


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

    if name is not None and name not in SAMPLERS:
        raise PcaeError(f"unknown sampler {name!r} (available: {', '.join(sorted(SAMPLERS))})")


@torch.no_grad()
def check_sample_memory(model: GatedPixelCNN, n: int, image_shape, what: str = "--n") -> None:
    """PcaeError naming `what` when n images could not fit in memory: the samples (int64) and one
    feature map per image, a lower bound on what any sampler holds, checked before allocating."""

    C, H, W = image_shape
    check_fits(float(n) * H * W * (8 * C + 4 * model.config.channels), f"{what} {n}")


def sample(model: GatedPixelCNN, n: int, image_shape, h: torch.Tensor | None = None,
           temperature: float = 1.0, generator: torch.Generator | None = None,
           method: str = "cached", progress: Progress | None = None, guidance: float = 0.0) -> torch.Tensor:
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
        guidance: w >= 0; w > 0 draws from logits pushed away from those given h = 0 by w times
            their difference (classifier-free guidance [3]), for a model trained with h = 0 on
            some of its images (train-portraits --h-drop). It runs a second batch: twice the time.
    Returns:
        (n, C, H, W) long levels in [0, levels).
    """
    image_shape = check_sample_args(model, n, image_shape, h, temperature, guidance)
    check_sample_memory(model, 2 * n if guidance else n, image_shape)
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {sorted(SAMPLERS)}, got {method!r}")
    was_training = model.training
    model.eval()
    try:
        if h is not None:
            h = h.to(next(model.parameters()).device)
        if model.config.stacks == 1:  # the cached sampler keeps two stacks' states: one stack runs naive
            method = "naive"
        return SAMPLERS[method](model, n, image_shape, h, temperature, generator, progress, guidance)
    finally:
        model.train(was_training)
