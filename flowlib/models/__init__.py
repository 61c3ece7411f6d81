"""Models built by composing :mod:`flowlib.transforms`; one file per model, each reading like its paper's method
section.

============================  =================================================================================
``flow.Flow``                 a transform plus a base density (optionally conditional): ``log_prob``, ``sample``
``nice.nice``                 NICE (Dinh et al., 2014): additive couplings and a diagonal scaling
``realnvp.realnvp``           RealNVP (Dinh et al., 2016): multi-scale affine couplings with factor-out
``glow.glow``                 Glow (Kingma & Dhariwal, 2018): ActNorm, invertible 1x1 convolution, affine coupling
``nsf.neural_spline_flow``    Neural Spline Flow (Durkan et al., 2019): rational-quadratic spline couplings
``maf.maf``                   Masked Autoregressive Flow (Papamakarios et al., 2017)
``pie.PIE``                   PIE (Beitler et al., 2021): a pseudo-invertible encoder that drops dimensions
``vae.VAE``, ``wae.WAE``      DCGAN-style VAE and WAE-MMD baselines
``selfvae.SelfVAE``           VAEs with flow priors and self-supervised VAEs (Gatopoulos & Tomczak, 2020)
``idf.IDF``                   Integer Discrete Flows (Hoogeboom et al., 2019), the model behind ``flowlib.compress``
============================  =================================================================================
"""

from __future__ import annotations

from flowlib.models.flow import Flow
from flowlib.models.glow import glow
from flowlib.models.idf import IDF
from flowlib.models.maf import maf
from flowlib.models.nice import nice
from flowlib.models.nsf import neural_spline_flow
from flowlib.models.pie import PIE
from flowlib.models.realnvp import MultiscaleFlow, realnvp, realnvp_vector
from flowlib.models.selfvae import SelfVAE
from flowlib.models.vae import VAE
from flowlib.models.wae import WAE

__all__ = [
    "Flow", "IDF", "MultiscaleFlow", "PIE", "SelfVAE", "VAE", "WAE", "glow", "maf", "neural_spline_flow", "nice",
    "realnvp", "realnvp_vector",
]
