"""Losses of the auto-encoder: reconstruction, MMD to the prior, the Fader game, the alpha schedule.

Shapes: ``B`` batch, ``M`` mel bands, ``F`` frames, ``D`` latent size, ``S`` styles.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def rbf_mmd(z: torch.Tensor, prior: torch.Tensor, scales: tuple[float, ...] = MMD_SCALES) -> torch.Tensor:
    """Unbiased squared MMD between latents ``z [B,D]`` and prior samples ``prior [N,D]``; a scalar.

    Kernel: a sum of RBF kernels ``exp(-||x - y||^2 / (s * 2D))``. The bandwidth rule is that of
    Tolstikhin et al. (WAE): ``2 * D * sigma^2`` with ``sigma = 1`` for the isotropic Gaussian
    prior, which is the expected squared distance between two prior samples; the scales
    ``s`` of :data:`MMD_SCALES` spread it over two decades so that both a collapsed and an
    over-spread posterior get a useful gradient.
    """
    d = z.shape[1]
    both = torch.cat([z, prior], dim=0)
    dist = torch.cdist(both, both).pow(2)
    kernel = sum(torch.exp(-dist / (s * 2.0 * d)) for s in scales)
    n, m = z.shape[0], prior.shape[0]
    k_zz, k_pp, k_zp = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    off_z = (k_zz.sum() - k_zz.diagonal().sum()) / (n * (n - 1))
    off_p = (k_pp.sum() - k_pp.diagonal().sum()) / (m * (m - 1))
    return off_z + off_p - 2 * k_zp.mean()


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Mean absolute error of log-mels ``[B,M,F]``, measured in normalised units (divided by ``scale``)."""
    return (pred - target).abs().mean() / scale


def discriminator_loss(logits: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the discriminator's style logits ``[B,S]`` against style indices ``[B]``."""
    return F.cross_entropy(logits, style)


def fader_loss(logits: torch.Tensor) -> torch.Tensor:
    """What the encoder minimises to fool the discriminator: cross-entropy of its logits ``[B,S]``
    against the uniform distribution over styles.

    With more than two styles, "flip the label" is ill-defined; asking for the uniform posterior
    is its natural extension and, unlike maximising the discriminator's loss, is bounded below
    (by ``log S``), so the adversarial term cannot run away.
    """
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def alpha_schedule(progress: float, pre_classification: float = 0.1, max_alpha: float = 4.0,
                   ramp_end: float = 0.5) -> float:
    """Weight of the Fader term at ``progress`` (0 = start, 1 = end of training).

    0 during the discriminator's pre-classification phase (``progress < pre_classification``),
    then a linear ramp reaching ``max_alpha`` at ``ramp_end`` (half of training), then fixed.
    """
    if progress < pre_classification:
        return 0.0
    if progress >= ramp_end:
        return max_alpha
    return max_alpha * (progress - pre_classification) / (ramp_end - pre_classification)
