"""Optional dependencies: the core install is torch and NumPy; everything else comes with an extra.

=============  ===========================  ==================================================================
extra          packages                     needed for
=============  ===========================  ==================================================================
``data``       torchvision, scikit-learn    :func:`flowlib.data.load_images` (MNIST, Fashion-MNIST, CIFAR-10),
                                            :func:`~flowlib.data.digits_8x8`, the ``moons``/``circles`` toys
``plot``       matplotlib                   :mod:`flowlib.plot`
``codecs``     Pillow, imagecodecs          the compressor's PNG/WebP input and output and the PNG, WebP,
                                            JPEG-XL and JPEG 2000 baselines
``progress``   tqdm                         progress bars in :func:`flowlib.train.fit` (without it: no bar)
``all``        all of the above
=============  ===========================  ==================================================================

``pip install "flows-and-bottlenecks[data,plot]"`` adds extras (the distribution's name; the import name is
``flowlib``); a feature whose extra is missing raises
:class:`MissingExtraError` naming the extra to install. This module imports nothing beyond the standard library,
so :mod:`flowlib.coding` (NumPy only) works without torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: import name -> (pip package, extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "torchvision": ("torchvision", "data"),
    "sklearn": ("scikit-learn", "data"),
    "matplotlib": ("matplotlib", "plot"),
    "PIL": ("Pillow", "codecs"),
    "imagecodecs": ("imagecodecs", "codecs"),
    "tqdm": ("tqdm", "progress"),
}


class MissingExtraError(ImportError):
    """An optional package that a feature needs is not installed; the message names the extra to install."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.datasets"``) or raise :class:`MissingExtraError` naming its extra.

    Arguments:
        module: the dotted module to import; its top-level package must be listed in :data:`EXTRAS`.
        feature: what needs it, for the message (e.g. ``"load_images('mnist')"``).

    Example:
        >>> require("json", "a doctest").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        if top not in EXTRAS:
            raise
        package, extra = EXTRAS[top]
        raise MissingExtraError(
            f"{feature} needs {package}, which is not installed: pip install 'flows-and-bottlenecks[{extra}]' "
            f"(or pip install {package})"
        ) from error
