"""Models every hospital trains, and the flat parameter vector the protocols carry.

All models output class logits and use GroupNorm (never BatchNorm: Opacus needs
per-sample gradients, which batch statistics would mix).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedvault.fl.config import ModelConfig
from fedvault.fl.errors import ConfigError


class SmallCNN(nn.Module):
    """One conv block (conv, GroupNorm, ReLU, 2x2 max-pool) and a linear head.

    Deliberately small (~1.5k parameters for 8x8 images): DP-SGD's noise grows with
    the number of parameters, and hospitals hold few images each.
    """

    def __init__(self, image_shape: tuple[int, ...], n_classes: int, channels: int = 8):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.GroupNorm(2, channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(channels * (h // 2) * (w // 2), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.image_shape)
        return self.head(self.features(x).flatten(1))


def build(cfg: ModelConfig, n_features: int, n_classes: int, image_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A fresh model; the caller seeds torch before calling for reproducible weights."""
    if cfg.kind == "logreg":
        return nn.Sequential(nn.Linear(n_features, n_classes))
    if cfg.kind == "mlp":
        layers: list[nn.Module] = []
        width = n_features
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)
    if cfg.kind == "cnn":
        if image_shape is None:
            raise ConfigError("model.kind = \"cnn\" needs an image data set (dataset = \"digits\")")
        return SmallCNN(image_shape, n_classes)
    raise ConfigError(f"unknown model kind {cfg.kind!r}")


def get_vector(model: nn.Module) -> np.ndarray:
    """All trainable parameters as one float64 vector (a fixed, documented order: ``model.parameters()``)."""
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).numpy().copy()


def set_vector(model: nn.Module, vec: np.ndarray) -> None:
    """Load a flat vector produced by :func:`get_vector` back into the model."""
    vec = np.asarray(vec, dtype=np.float64)
    n = sum(p.numel() for p in model.parameters())
    if vec.shape != (n,):
        raise ValueError(f"parameter vector has shape {vec.shape}, model needs ({n},)")
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            k = p.numel()
            p.copy_(torch.from_numpy(vec[off : off + k]).view_as(p).to(p.dtype))
            off += k


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
