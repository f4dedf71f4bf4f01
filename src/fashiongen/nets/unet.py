"""A small U-Net for denoising diffusion, sized for a CPU (Ronneberger et al., arXiv 1505.04597).

The DDPM variant of Ho et al. (arXiv 2006.11239, appendix B): residual blocks with GroupNorm
and SiLU into which a sinusoidal timestep embedding (and a class embedding, with an extra
"null" class for classifier-free guidance, Ho & Salimans arXiv 2207.12598) is added, optional
self-attention at the lowest resolution, and an optional 2x2 pixel-unshuffle stem (Shi et al.,
arXiv 1609.05158) that halves the resolution the network works at, which is what makes it fast
enough on two CPU cores. Any (C, H, W) works: the input is padded to a multiple of the total
downsampling factor and the output cropped back. It knows nothing of noise schedules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_GROUPS = 8  # GroupNorm groups; small widths fall back to a divisor of the width
MAX_PERIOD = 10_000  # sinusoidal embedding, as in Vaswani et al. / Ho et al.


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, MAX_GROUPS), channels)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps: (B,) -> (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, and a skip connection."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Ho et al. app. B)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, head_dim)
        attn = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attn.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x, then a conv that also narrows to the next level's width (cheaper there)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """eps/v/x0-predicting U-Net: (x_t (B, C, H, W), t (B,), labels (B,) | None) -> (B, C, H, W).

    Args:
        channels: image channels C.
        widths: feature channels per resolution level, e.g. (32, 64); len(widths) - 1
            downsamplings.
        num_res_blocks: residual blocks per level on each side.
        use_attention: self-attention between the two middle blocks (lowest resolution).
        use_unshuffle: 2x2 pixel-unshuffle stem (C -> 4C channels at half resolution) and a
            pixel-shuffle back at the end.
        num_classes: 0 for unconditional; otherwise labels 0..num_classes-1 and the extra
            index `num_classes` (= `null_label`) meaning "no class".
    """

    def __init__(
        self,
        channels: int,
        widths: tuple[int, ...] = (32, 64),
        *,
        num_res_blocks: int = 1,
        use_attention: bool = False,
        use_unshuffle: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if not widths or num_res_blocks < 1:
            raise ValueError("UNet needs at least one width and one residual block per level")
        self.use_unshuffle = use_unshuffle
        self.num_classes = num_classes
        self.factor = (2 if use_unshuffle else 1) * 2 ** (len(widths) - 1)
        self.embed_dim = widths[0]
        emb_dim = 4 * widths[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(self.embed_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        stem_channels = channels * 4 if use_unshuffle else channels
        self.stem = nn.Conv2d(stem_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = widths[0]
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width, emb_dim))
                ch = width
            self.down.append(blocks)
            self.downsample.append(Downsample(ch) if level + 1 < len(widths) else nn.Identity())
        self.mid1 = ResBlock(ch, ch, emb_dim)
        self.attention = SelfAttention(ch) if use_attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks = nn.ModuleList()
            for b in range(num_res_blocks):
                skip = width if b == 0 else 0  # the level's skip joins at its first block
                blocks.append(ResBlock(ch + skip, width, emb_dim))
                ch = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(Upsample(ch, widths[level - 1]))
                ch = widths[level - 1]
            else:
                self.upsample.append(nn.Identity())
        self.out_norm = _norm(ch)
        self.out = nn.Conv2d(ch, stem_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_label(self) -> int:
        """The class index meaning "unconditional", for classifier-free guidance."""
        return self.num_classes

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = x_t.shape[-2:]
        pad_h, pad_w = -height % self.factor, -width % self.factor
        h = F.pad(x_t, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x_t
        if self.use_unshuffle:
            h = F.pixel_unshuffle(h, 2)  # (B, 4C, H/2, W/2)

        emb = self.time_mlp(timestep_embedding(t, self.embed_dim).to(h.dtype))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.null_label)
            emb = emb + self.class_emb(labels)

        h = self.stem(h)
        skips = []
        for blocks, downsample in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = downsample(h)
        h = self.mid2(self.attention(self.mid1(h, emb)), emb)
        for blocks, upsample in zip(self.up, self.upsample, strict=True):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = upsample(h)
        h = self.out(F.silu(self.out_norm(h)))

        if self.use_unshuffle:
            h = F.pixel_shuffle(h, 2)
        return h[..., :height, :width]
