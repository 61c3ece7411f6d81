"""Evaluation metrics shared by the chapters.

Bits per dimension, the convention used throughout the book
------------------------------------------------------------
Images hold integers ``x in {0, ..., 255}^D``. A continuous model is trained on uniformly dequantized data scaled to
``[0, 1)``: ``y = (x + u) / 256`` with ``u ~ U[0, 1)^D``. Its density ``p(y)`` lives on bins of width ``1/256``, so the
discrete probability it assigns to ``x`` is (in expectation, a lower bound) ``P(x) ~= p(y) * (1/256)^D``. Hence

    bpd = -(log p(y) - D log 256) / (D ln 2)  =  -log2 P(x) / D.

A discrete model (Integer Discrete Flows) gives ``log P(x)`` directly: use ``bin_width=1``.

Sample quality: the Fréchet distance and "proxy FID"
----------------------------------------------------
The Fréchet Inception Distance (FID; Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium", https://arxiv.org/abs/1706.08500) fits a Gaussian to features of real and of generated
images and reports the squared Fréchet (2-Wasserstein) distance between the two Gaussians,

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

:func:`frechet_distance` computes it for any two sets of feature vectors (raw vectors for low-dimensional synthetic
data). The Inception network is not available offline, so for MNIST and Fashion-MNIST :func:`proxy_fid` uses the
128-dimensional penultimate features of a small classifier (:class:`ProxyFIDClassifier`) trained once per dataset and
committed as the checkpoints ``proxy_fid-mnist`` and ``proxy_fid-fashion_mnist``. Its values are comparable with
each other, never with published Inception FIDs. :func:`normalized_absolute_covariance` (NAC) measures how far
codes are from having independent coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from flowlib.data import as_batches, batch_inputs

__all__ = [
    "PROXY_FID_DATASETS",
    "ProxyFIDClassifier",
    "bits_per_dim",
    "count_parameters",
    "dataset_bits_per_dim",
    "frechet_distance",
    "frechet_distance_gaussians",
    "gaussian_statistics",
    "load_proxy_fid_classifier",
    "normalized_absolute_covariance",
    "proxy_fid",
    "proxy_fid_features",
    "sharpness",
    "train_proxy_fid_classifier",
]


def bits_per_dim(log_prob: Tensor, num_dims: int, bin_width: float = 1 / 256) -> Tensor:
    """Bits per dimension from a log-density (nats) of data whose integer bins have width ``bin_width``.

    Arguments:
        log_prob: ``(B,)`` log-density in nats, of ``[0,1]``-scaled dequantized data by default.
        num_dims: ``D``, the number of dimensions of one example (784 for MNIST).
        bin_width: width of one integer bin in the model's input space: ``1/256`` for data scaled to ``[0, 1)``,
            ``1`` for data in ``[0, 256)`` or for a discrete model's log-probability.
    Returns:
        ``(B,)`` bits per dimension.

    Example:
        >>> float(bits_per_dim(torch.tensor([0.0]), num_dims=1))  # uniform density on [0,1): exactly 8 bits
        8.0
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return -(log_prob + num_dims * math.log(bin_width)) / (num_dims * math.log(2.0))


LAPLACE_KERNELS: dict[str, list[list[float]]] = {
    "laplace4": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
    "laplace8": [[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]],
}



def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (trainable or not)."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def dataset_bits_per_dim(model: nn.Module, batches: Iterable, *, seed: int = 1234, device: torch.device | str = "cpu") -> float:
    """Mean of ``model.bits_per_dim(x)`` over every example of ``batches``: a tensor of examples, a Dataset, or
    batches that are tensors or ``(x, label)`` pairs (e.g. a test loader); see :func:`flowlib.data.as_batches`.

    The global torch RNG is seeded with ``seed`` while the batches are drawn, so the dequantization noise (and hence
    the number) is the same on every run; the caller's RNG state is restored afterwards. The model is put in eval mode.
    """
    model.eval().to(device)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        total, count = 0.0, 0
        for batch in as_batches(batches, batch_size=500):
            bpd = model.bits_per_dim(batch_inputs(batch).to(device))
            total, count = total + bpd.sum().item(), count + len(bpd)
    finally:
        torch.random.set_rng_state(state)
    if count == 0:
        raise ValueError("dataset_bits_per_dim got no examples")
    return total / count


def sharpness(images: Tensor, kernel: str = "laplace4", padding: str = "valid") -> float:
    """Image sharpness of PIE's Table 1: the variance of the Laplace-filtered image, averaged over images.

    Each image is converted to grey (mean over channels), convolved with a 3x3 Laplace kernel and the (population)
    variance of its activations is taken; the result is the mean over the batch. Blurry images have few edges, so
    most activations are near zero and the variance is small. Calibrated on the 10,000 MNIST test digits: the
    4-neighbour kernel on images in ``[0, 1]`` (uint8 / 255) with ``"valid"`` convolution gives 0.18, the paper's
    value for real images (the 8-neighbour kernel gives 1.08; zero padding to the same size gives 0.16).

    Arguments:
        images: ``(N, C, H, W)`` or ``(N, H, W)``; floats in ``[0, 1]`` or ``uint8`` (divided by 255).
        kernel: ``"laplace4"`` (``[[0,1,0],[1,-4,1],[0,1,0]]``) or ``"laplace8"`` (all ones, -8 in the middle).
        padding: ``"valid"`` (no padding, ``(H-2, W-2)`` activations) or ``"same"`` (zero padding).
    Returns:
        the average per-image variance, a Python float.

    Example:
        >>> import torch
        >>> sharpness(torch.full((2, 1, 8, 8), 0.5))  # a constant image has no edges
        0.0
    """
    if kernel not in LAPLACE_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(LAPLACE_KERNELS)}, got {kernel!r}")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[-1] < 3 or images.shape[-2] < 3:
        raise ValueError(
            f"sharpness expects images of shape (N, C, H, W) or (N, H, W) with H, W >= 3, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        images = images.double() / 255.0
    grey = images.double().mean(dim=1, keepdim=True)
    weight = torch.tensor(LAPLACE_KERNELS[kernel], dtype=grey.dtype, device=grey.device).view(1, 1, 3, 3)
    activations = torch.nn.functional.conv2d(grey, weight, padding=0 if padding == "valid" else 1)
    return activations.flatten(1).var(dim=1, unbiased=False).mean().item()


# --- Fréchet distance ---------------------------------------------------------------------------------------------


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``features`` ``(N, d)``, in float64 (``N >= 2``).

    Example:
        >>> mean, covariance = gaussian_statistics(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        >>> mean.tolist(), covariance.tolist()
        ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_statistics expects features of shape (N, d) with N >= 2, got {tuple(features.shape)}")
    features = features.detach().to(torch.float64)
    if not torch.isfinite(features).all():
        raise ValueError("gaussian_statistics got NaN or infinite features; check the model that produced them")
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def _psd_square_root(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix via its eigendecomposition (eigenvalues
    below zero, which only round-off produces, are set to zero)."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance_gaussians(mean_a: Tensor, covariance_a: Tensor, mean_b: Tensor, covariance_b: Tensor) -> float:
    """Squared Fréchet distance between ``N(mean_a, covariance_a)`` and ``N(mean_b, covariance_b)``.

    ``d^2 = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a^1/2 S_b S_a^1/2)^1/2)``. The trace of the matrix square
    root is the sum of the square roots of the eigenvalues of the symmetric PSD matrix ``S_a^1/2 S_b S_a^1/2``
    (computed with ``eigh`` in float64), which avoids the complex round-off of a general ``sqrtm``.
    Means are ``(d,)``, covariances ``(d, d)``; returns a Python float ``>= 0``.

    Example:
        >>> identity = torch.eye(2)
        >>> frechet_distance_gaussians(torch.zeros(2), identity, torch.tensor([3.0, 4.0]), 4 * identity)
        27.0
    """
    d = mean_a.shape[-1]
    shapes = [tuple(t.shape) for t in (mean_a, covariance_a, mean_b, covariance_b)]
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(f"frechet_distance_gaussians expects means (d,) and covariances (d, d); got shapes {shapes}")
    mean_a, covariance_a, mean_b, covariance_b = (t.detach().to(torch.float64).cpu()
                                                  for t in (mean_a, covariance_a, mean_b, covariance_b))
    root_a = _psd_square_root(covariance_a)
    middle = root_a @ covariance_b @ root_a
    trace_of_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + covariance_a.trace() + covariance_b.trace() - 2 * trace_of_root
    return max(distance.item(), 0.0)


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to two sets of feature vectors ``(N_a, d)`` and ``(N_b, d)``.

    This is FID when the features are Inception activations, :func:`proxy_fid` with a small classifier's features,
    and the "raw-vector" Fréchet distance when they are the data themselves. Like FID it is biased upwards for small
    ``N`` (the covariance estimates are noisy): compare values computed with the same numbers of samples, and use
    many more samples than dimensions.

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> a = torch.randn(5000, 3, generator=generator)
        >>> frechet_distance(a, a) < 1e-9  # zero up to float64 round-off
        True
        >>> round(frechet_distance(a, a + torch.tensor([1.0, 0.0, 0.0])), 6)  # a shift of 1 costs exactly 1
        1.0
    """
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            "frechet_distance expects two sets of feature vectors (N_a, d) and (N_b, d) with the same d, got "
            f"{tuple(features_a.shape)} and {tuple(features_b.shape)}"
        )
    return frechet_distance_gaussians(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


# --- proxy FID: a small MNIST / Fashion-MNIST classifier as the feature extractor -----------------------------------

PROXY_FID_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist")


class ProxyFIDClassifier(nn.Module):
    """A small CNN classifier whose penultimate activations are the features of :func:`proxy_fid`.

    Three 3x3 convolution + ReLU + 2x2 max-pool stages (32, 64, 128 channels; 28 -> 14 -> 7 -> 3), a fully connected
    layer to ``feature_dim`` units with ReLU (the features), and a linear layer to the class logits. No batch norm or
    dropout, so the features of an image never depend on the rest of its batch.

    Arguments:
        num_classes: number of classes (10 for MNIST and Fashion-MNIST).
        feature_dim: size of the feature vector.

    Example:
        >>> net = ProxyFIDClassifier()
        >>> x = torch.rand(2, 1, 28, 28)
        >>> net(x).shape, net.features(x).shape
        (torch.Size([2, 10]), torch.Size([2, 128]))
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.convolutions = nn.Sequential(*layers)
        self.embedding = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(B, feature_dim)`` of images ``(B, 1, 28, 28)`` in ``[0, 1]``."""
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"ProxyFIDClassifier expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return self.embedding(self.convolutions(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.features(x))


def _proxy_checkpoint_name(dataset: str) -> str:
    if dataset not in PROXY_FID_DATASETS:
        raise ValueError(f"proxy FID is defined for {', '.join(PROXY_FID_DATASETS)}; got {dataset!r}")
    return f"proxy_fid-{dataset}"


def train_proxy_fid_classifier(
    dataset: str,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    save: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[ProxyFIDClassifier, dict[str, Any]]:
    """Train the proxy-FID feature classifier on the training split of ``dataset`` with Adam.

    This is how the committed checkpoints ``proxy_fid-<dataset>`` were made (a few minutes on one CPU thread).
    ``save=True`` writes the checkpoint and its manifest entry, replacing the committed one: every proxy FID ever
    reported with the old weights then stops being comparable with new ones. Returns ``(model, metadata)`` with
    the test accuracy in the metadata.
    """
    from flowlib.data import image_loader, load_images
    from flowlib.train import fit, save_checkpoint, seed_everything

    name = _proxy_checkpoint_name(dataset)
    seed_everything(seed)
    model = ProxyFIDClassifier()
    loader = image_loader(dataset, "train", batch_size=batch_size, form="unit", seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    history = fit(model, lambda net, batch: nn.functional.cross_entropy(net(batch[0]), batch[1]), loader,
                  epochs=epochs, optimizer=optimizer, scheduler=scheduler, device=device, progress=False)
    images, labels = load_images(dataset, "test", form="unit")
    model.eval().cpu()
    with torch.no_grad():
        predictions = torch.cat([model(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)])
    metadata = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "seconds": round(history.seconds, 1), "test_accuracy": (predictions == labels).float().mean().item(),
                "curve": history.curve(20)}
    if save:
        save_checkpoint(model, name, metadata=metadata)
    return model, metadata


_PROXY_CLASSIFIERS: dict[tuple[str, str], ProxyFIDClassifier] = {}


def load_proxy_fid_classifier(dataset: str, device: torch.device | str = "cpu") -> ProxyFIDClassifier:
    """The committed proxy-FID classifier of ``dataset`` (``"mnist"`` or ``"fashion_mnist"``), in eval mode.

    Loaded once per process and device (its sha256 is checked against ``checkpoints/MANIFEST.json``). Raises
    :class:`flowlib.train.CheckpointError` if the checkpoint is missing; recreate it with
    ``train_proxy_fid_classifier(dataset, save=True)``.
    """
    from flowlib.train import CheckpointError, load_checkpoint

    name = _proxy_checkpoint_name(dataset)
    key = (dataset, str(torch.device(device)))
    if key not in _PROXY_CLASSIFIERS:
        model = ProxyFIDClassifier()
        try:
            load_checkpoint(model, name)
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}. The proxy-FID classifier is trained once and committed; recreate it with "
                f"flowlib.metrics.train_proxy_fid_classifier({dataset!r}, save=True) (a few CPU minutes)"
            ) from error
        _PROXY_CLASSIFIERS[key] = model.eval().to(device).requires_grad_(False)
    return _PROXY_CLASSIFIERS[key]


def _as_unit_images(images: Tensor) -> Tensor:
    """``uint8`` or float images of shape ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)`` as floats in [0, 1]."""
    if images.dim() == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 1, 28, 28)
    elif images.dim() == 3 and images.shape[1:] == (28, 28):
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"proxy FID expects 28x28 grey images (N, 1, 28, 28), (N, 28, 28) or (N, 784); "
                         f"got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    images = images.float()
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"proxy FID expects float images in [0, 1] (or uint8); got values in "
                         f"[{images.min().item():.3g}, {images.max().item():.3g}]")
    return images.clamp(0.0, 1.0)


@torch.no_grad()
def proxy_fid_features(images: Tensor, dataset: str, *, batch_size: int = 1000,
                       device: torch.device | str = "cpu") -> Tensor:
    """Proxy-FID features ``(N, 128)`` of images (see :func:`proxy_fid` for the accepted forms)."""
    images = _as_unit_images(images)
    classifier = load_proxy_fid_classifier(dataset, device)
    return torch.cat([classifier.features(images[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def proxy_fid(images_a: Tensor, images_b: Tensor, dataset: str, *, device: torch.device | str = "cpu") -> float:
    """Proxy FID: the Fréchet distance between Gaussians fitted to the :class:`ProxyFIDClassifier` features of two
    sets of images.

    Arguments:
        images_a, images_b: 28x28 grey images as ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)``; ``uint8`` or
            floats in ``[0, 1]``. Use the same number of images for every value you want to compare (FID is biased
            upwards for small sets); 10,000 against the 10,000 test images is the usual choice.
        dataset: ``"mnist"`` or ``"fashion_mnist"``: whose classifier provides the features.
    Returns:
        a Python float; 0 for identical sets. Not comparable with Inception FIDs in papers.

    Example:
        >>> from flowlib.data import load_images
        >>> test = load_images("mnist", "test", subset=500)[0]
        >>> proxy_fid(test, test, "mnist") < 1e-6
        True
    """
    return frechet_distance(proxy_fid_features(images_a, dataset, device=device),
                            proxy_fid_features(images_b, dataset, device=device))


# --- normalised absolute covariance (NAC) ------------------------------------------------------------------------


def normalized_absolute_covariance(codes: Tensor, dims: Tensor | list[int] | None = None) -> float:
    """NAC: the mean off-diagonal entry of the normalised absolute covariance of latent codes.

    Mondal et al. (2020), "MaskAAE: Latent space optimization for Adversarial Auto-Encoders", UAI,
    https://arxiv.org/abs/1912.04564, Eq. 18 and Table 2: with the batch covariance ``C`` of the codes,
    ``|C_ij| / sqrt(C_ii C_jj)`` (the absolute correlation) averaged over ``i != j``. Codes that match an isotropic
    Gaussian prior have independent coordinates and a NAC near 0 (about ``sqrt(2 / (pi N))`` from sampling noise
    alone); 1 means every pair of coordinates is perfectly (anti-)correlated.

    Arguments:
        codes: ``(N, d)`` latent codes, ``N >= 2``.
        dims: the coordinates to use (e.g. a MaskAAE's unmasked dimensions); default all. At least two.
    Returns:
        a Python float in ``[0, 1]``.

    Example:
        >>> t = torch.linspace(-1, 1, 100)
        >>> round(normalized_absolute_covariance(torch.stack([t, -2 * t], dim=1)), 6)
        1.0
    """
    if codes.dim() != 2 or codes.shape[0] < 2:
        raise ValueError(f"NAC expects codes of shape (N, d) with N >= 2, got {tuple(codes.shape)}")
    if dims is not None:
        codes = codes[:, torch.as_tensor(dims, dtype=torch.long)]
    if codes.shape[1] < 2:
        raise ValueError(f"NAC needs at least two latent dimensions, got {codes.shape[1]}")
    _, covariance = gaussian_statistics(codes)
    variances = covariance.diagonal()
    if (variances <= 0).any():
        raise ValueError("NAC is undefined for a dimension with zero variance; leave such dimensions out with dims=")
    normalised = covariance.abs() / (variances.sqrt()[:, None] * variances.sqrt()[None, :])
    d = normalised.shape[0]
    off_diagonal = normalised.sum() - normalised.diagonal().sum()
    return min(off_diagonal.item() / (d * (d - 1)), 1.0)
