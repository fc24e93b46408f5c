"""A light re-implementation of the parts of diffusers' UNet2DModel the embedded model uses.

Same module names, so the same state dict loads; same forward (checked against diffusers in
tests/test_embedded.py). It exists so loading the embedded model needs torch only, not the
seconds-long diffusers import.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding, cosines first (diffusers' flip_sin_to_cos=True, freq_shift=0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim, temb):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(dim, temb), nn.Linear(temb, temb)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention(nn.Module):
    """Spatial self-attention with a group norm and a residual connection."""

    def __init__(self, channels, head_dim, groups, eps):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)
        split = lambda t: t.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.to_q(tokens)), split(self.to_k(tokens)),
                                             split(self.to_v(tokens)))
        out = self.to_out[0](out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class Resample(nn.Module):
    """A stride-2 conv down, or nearest x2 then a conv up."""

    def __init__(self, channels, up):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class Block(nn.Module):
    """A down, mid or up block: resnets, each optionally followed by attention, then a resampler."""

    def __init__(self, resnets, attentions=None, resample=None, kind="down"):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if attentions else None
        if resample is not None:
            setattr(self, "downsamplers" if kind == "down" else "upsamplers", nn.ModuleList([resample]))
        self.kind = kind


class UNet(nn.Module):
    """diffusers.UNet2DModel (resnet_time_scale_shift='default', class embeddings) for our config."""

    def __init__(self, sample_size, in_channels, out_channels, layers_per_block, block_out_channels,
                 down_block_types, up_block_types, num_class_embeds, norm_num_groups, attention_head_dim,
                 norm_eps=1e-5):
        super().__init__()
        ch, g, eps, temb = block_out_channels, norm_num_groups, norm_eps, block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.class_embedding = nn.Embedding(num_class_embeds, temb)
        attn = lambda c: SelfAttention(c, attention_head_dim, g, eps)  # noqa: E731
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(down_block_types):
            cin, cout, last = ch[max(i - 1, 0)], ch[i], i == len(ch) - 1
            resnets = [ResnetBlock(cin if j == 0 else cout, cout, temb, g, eps) for j in range(layers_per_block)]
            self.down_blocks.append(Block(resnets, [attn(cout) for _ in resnets] if "Attn" in kind else None,
                                          None if last else Resample(cout, up=False)))
        self.mid_block = Block([ResnetBlock(ch[-1], ch[-1], temb, g, eps) for _ in range(2)], [attn(ch[-1])],
                               kind="mid")
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(up_block_types):
            prev, cout, skip_in = rev[max(i - 1, 0)], rev[i], rev[min(i + 1, len(ch) - 1)]
            resnets = [ResnetBlock((prev if j == 0 else cout) + (skip_in if j == layers_per_block else cout), cout,
                                   temb, g, eps) for j in range(layers_per_block + 1)]
            self.up_blocks.append(Block(resnets, [attn(cout) for _ in resnets] if "Attn" in kind else None,
                                        None if i == len(ch) - 1 else Resample(cout, up=True), kind="up"))
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], out_channels, 3, padding=1)

    def forward(self, x, t, class_labels):
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        emb = self.time_embedding(timestep_embedding(t, self.conv_in.out_channels).to(x.dtype))
        emb = emb + self.class_embedding(class_labels).to(x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            for k, resnet in enumerate(block.resnets):
                h = resnet(h, emb)
                if block.attentions is not None:
                    h = block.attentions[k](h)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, emb)
        h = self.mid_block.resnets[1](self.mid_block.attentions[0](h), emb)
        for block in self.up_blocks:
            for k, resnet in enumerate(block.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                if block.attentions is not None:
                    h = block.attentions[k](h)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))
