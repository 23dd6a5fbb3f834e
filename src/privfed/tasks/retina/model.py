"""The DCGAN: a generator and a discriminator in one module, so both travel and are averaged.

Both use GroupNorm, never BatchNorm: DP-SGD (Opacus) needs per-sample gradients, which batch
statistics mix. The generator upsamples with nearest-neighbour + 3x3 convolutions (no
checkerboard artefacts of transposed convolutions); the discriminator is strided 4x4
convolutions. With ``conditional`` the generator adds a grade embedding to its latent code and
the discriminator is a projection discriminator (Miyato & Koyama, 2018): its score adds the
inner product of a grade embedding with its features, so it judges "a real grade-g image".
With ``class_weight`` the discriminator also has an auxiliary grade head (AC-GAN, Odena et
al., 2017), trained on real images only; the generator is asked to make samples it grades as
the grade they were drawn for, so a grade's samples carry that grade's signs.

With ``ema_decay`` the module also holds ``generator_ema``: an exponential moving average of
the generator's weights (Karras et al., 2018; Yazici et al., 2019), updated after every
generator step and never trained itself. Samples, figures, metrics and the registered model
use it: a GAN's last iterate oscillates around a better average. It is part of the state dict,
so it travels and FedAvg averages it like every weight (an average of EMAs is the EMA of the
average: both are linear).

Two generator options give the samples of one grade more to vary by than the latent code:
``noise_gain`` adds a fresh per-pixel noise map after every GroupNorm, times a learned
per-channel gain that starts at ``noise_gain`` (StyleGAN's noise inputs, Karras et al.,
2019); ``grade_norm`` makes the GroupNorms' gains and biases per grade (conditional
normalization, as BigGAN's), so the grade steers every layer and the latent code is left to
carry the variety within a grade.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["Discriminator", "Generator", "GradeNorm", "NoiseInput", "RetinaGAN", "build_gan"]

NUM_GRADES = 5


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(4, channels)


class NoiseInput(nn.Module):
    """``h + gain * noise``: one N(0, 1) map per image, shared by the channels, each channel
    scaled by its own learned gain.

    The gains start at ``gain``, not at StyleGAN's 0: placed after a GroupNorm, ``h`` has unit
    scale, and Adam's steps of about ``lr`` (2e-4) would take thousands of steps to grow a gain
    from 0 to a size that shows (measured: 0.002 after public pretraining, noise changed a
    sample's pixels by 0.002).
    """

    def __init__(self, channels: int, gain: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1, channels, 1, 1), float(gain)))

    def forward(self, h: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        shape = (len(h), 1, *h.shape[2:])
        if rng is None:
            noise = torch.randn(shape, device=h.device, dtype=h.dtype)
        else:  # drawn where the seeded generator lives, then moved
            noise = torch.randn(shape, generator=rng, device=rng.device).to(h)
        return h + self.gain * noise


class GradeNorm(nn.Module):
    """GroupNorm (4 groups) whose gain and bias per channel are looked up by the DR grade.

    They start at 1 and 0, as a plain GroupNorm's affine parameters do.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, channels, affine=False)
        self.gain = nn.Embedding(NUM_GRADES, channels)
        self.bias = nn.Embedding(NUM_GRADES, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: torch.Tensor, grade: torch.Tensor) -> torch.Tensor:
        return (
            self.norm(h) * self.gain(grade)[:, :, None, None] + self.bias(grade)[:, :, None, None]
        )


class Generator(nn.Module):
    """``(z [B, latent], grade [B]) -> image [B, 1, S, S]`` in [-1, 1].

    With ``noise_gain`` the output also depends on noise maps drawn at every call: from
    ``noise`` (a seeded ``torch.Generator``) where given, else from torch's global generator.
    """

    def __init__(
        self,
        *,
        image_size: int,
        latent_dim: int,
        channels: int,
        conditional: bool,
        noise_gain: float = 0.0,
        grade_norm: bool = False,
    ):
        super().__init__()
        if grade_norm and not conditional:
            raise ValueError("grade_norm needs a conditional generator (conditional=True)")
        self.latent_dim = latent_dim
        self.conditional = conditional
        blocks = int(math.log2(image_size // 4))
        widths = [min(channels * 2 ** (blocks - i), channels * 8) for i in range(blocks + 1)]

        def norm(width: int) -> list[nn.Module]:
            noise = [NoiseInput(width, noise_gain)] if noise_gain > 0 else []
            return [GradeNorm(width) if grade_norm else _norm(width), *noise]

        self.embed = nn.Embedding(NUM_GRADES, latent_dim) if conditional else None
        self.project = nn.Linear(latent_dim, widths[0] * 16)
        self.start = nn.Sequential(*norm(widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                *norm(widths[i + 1]),
                nn.ReLU(),
            ]
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[-1], 1, 3, padding=1)
        self.widths = widths

    def forward(
        self,
        z: torch.Tensor,
        grade: torch.Tensor | None = None,
        *,
        noise: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.embed is not None:
            if grade is None:
                raise ValueError("a conditional generator needs the grades")
            z = z + self.embed(grade)
        h = self.project(z).view(len(z), self.widths[0], 4, 4)
        for layer in (*self.start, *self.blocks):
            if isinstance(layer, GradeNorm):
                h = layer(h, grade)
            elif isinstance(layer, NoiseInput):
                h = layer(h, noise)
            else:
                h = layer(h)
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """``(image, grade) -> logit [B]`` that the image is a real one (of that grade)."""

    def __init__(
        self, *, image_size: int, channels: int, conditional: bool, classifier: bool = False
    ):
        super().__init__()
        blocks = int(math.log2(image_size // 4))
        widths = [min(channels * 2**i, channels * 8) for i in range(blocks)]
        layers: list[nn.Module] = [
            nn.Conv2d(1, widths[0], 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for i in range(1, blocks):
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 4, stride=2, padding=1),
                _norm(widths[i]),
                nn.LeakyReLU(0.2),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.Flatten()
        features = widths[-1] * 16
        self.head = nn.Linear(features, 1)
        self.embed = nn.Embedding(NUM_GRADES, features) if conditional else None
        self.classify = nn.Linear(features, NUM_GRADES) if classifier else None

    def forward(
        self, image: torch.Tensor, grade: torch.Tensor | None = None, *, grades: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logit; with ``grades`` also the auxiliary head's grade logits ``[B, 5]``."""
        h = self.pool(self.features(image))
        logit = self.head(h)[:, 0]
        if self.embed is not None:
            if grade is None:
                raise ValueError("a conditional discriminator needs the grades")
            logit = logit + (self.embed(grade) * h).sum(dim=1) / math.sqrt(h.shape[1])
        if not grades:
            return logit
        if self.classify is None:
            raise ValueError("this discriminator has no grade head (model.retina.class_weight 0)")
        return logit, self.classify(h)


class RetinaGAN(nn.Module):
    """Generator and discriminator in one module: one state dict travels and is averaged.

    Calling the module runs the discriminator, so Opacus (which wraps what it is given) and
    the membership audit see the only network that reads real images.
    """

    def __init__(
        self, generator: Generator, discriminator: Discriminator, *, ema: bool = False
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema else None
        #: the latent codes' standard deviation when sampling (training always draws N(0, 1)):
        #: above 1 widens what the samples of one grade cover, below 1 is the truncation trick
        self.latent_scale = 1.0

    @property
    def sampler(self) -> Generator:
        """The generator samples come from: the weight average where there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """``ema <- decay * ema + (1 - decay) * generator``, weight by weight (no-op without)."""
        if self.generator_ema is None:
            return
        ema = list(self.generator_ema.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.generator.parameters()], 1 - decay)

    def forward(
        self, image: torch.Tensor, grade: torch.Tensor | None = None, *, grades: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator(image, grade, grades=grades)

    @torch.no_grad()
    def sample(
        self, grades: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images of ``grades`` from seeded latent codes and noise maps (eval mode; the mode is
        restored)."""
        was = self.training
        self.eval()
        try:
            z = self.latent_scale * torch.randn(
                len(grades), self.sampler.latent_dim, generator=generator
            )
            device = next(self.parameters()).device
            return self.sampler(z.to(device), grades.to(device), noise=generator)
        finally:
            self.train(was)


def build_gan(settings: object) -> RetinaGAN:
    """The DCGAN ``model.retina`` describes."""
    return RetinaGAN(
        Generator(
            image_size=settings.image_size,
            latent_dim=settings.latent_dim,
            channels=settings.g_channels,
            conditional=settings.conditional,
            noise_gain=settings.noise_gain,
            grade_norm=settings.grade_norm,
        ),
        Discriminator(
            image_size=settings.image_size,
            channels=settings.d_channels,
            conditional=settings.conditional,
            classifier=settings.class_weight > 0,
        ),
        ema=settings.ema_decay > 0,
    )
