"""A normalizing flow: an invertible transform from data to latent plus a base density on the latent.

Change of variables (Dinh et al., 2014, Eq. 1; Rezende & Mohamed, 2015)::

    log p(x) = log pi(f(x)) + log |det df(x)/dx|

``f`` is ``transform.forward`` (data -> latent), which returns ``f(x)`` and the log-det; sampling runs the inverse
on draws from the base, ``x = f^{-1}(z)``, ``z ~ pi``. Factor-out layers (``Split``) add the log-density of the part
they drop to the log-det term, so the formula holds unchanged for multi-scale models.

A conditional flow ``p(x | c)`` uses the same formula with a context ``c`` handed to every conditioner network
(Winkler et al., 2019): build its couplings with conditioners that take ``context_features`` and pass ``context=``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, distributions, nn

from flowlib.distributions.torch_base import TorchDistribution
from flowlib.metrics import bits_per_dim
from flowlib.transforms._shapes import check_dtype, module_dtype
from flowlib.transforms.base import Transform

__all__ = ["Flow"]


def _sample_shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape):
        raise ValueError(
            f"sample_shape must be a non-negative int or a tuple of them, e.g. 4 or (4,), got {sample_shape!r}"
        )
    return shape


class Flow(nn.Module):
    """``log p(x) = base.log_prob(z) + logabsdet`` with ``(z, logabsdet) = transform(x)``.

    It follows ``torch.distributions.Distribution`` where a flow can: ``log_prob``, ``sample(sample_shape)``
    (without gradients), ``rsample`` (with them) and ``sample_and_log_prob`` (one pass through the inverse
    instead of a sample and a second pass for the density).

    Arguments:
        transform: the data-to-latent :class:`~flowlib.transforms.Transform` (usually a ``Compose``).
        base: the latent density: a flowlib distribution (``log_prob(z) -> (B,)``, ``sample(n, temperature)``)
            or any ``torch.distributions.Distribution`` (wrapped in
            :class:`~flowlib.distributions.TorchDistribution`; temperature works for Normal-like bases).
        event_shape: latent shape, needed only for a scalar torch base such as ``Normal(0, 1)``.

    Shapes: ``log_prob``: ``(B, *event_shape) -> (B,)``; ``sample(sample_shape)``: ``(*sample_shape, *event_shape)``.
    With a context ``(B, K)`` (conditional flows): ``log_prob(x, context)`` is ``(B,)``; ``sample(sample_shape,
    context)`` is ``(*sample_shape, B, *event_shape)``, or ``(*sample_shape, *event_shape)`` for one context ``(K,)``.

    Batch size 0 gives empty results (``(0,)`` log-probabilities, ``sample(0)`` of shape ``(0, *event_shape)``).
    Dtypes: the flow works in the dtype of its parameters; data of another dtype (float64 data for a float32 flow)
    raises :class:`~flowlib.transforms.InputDtypeError` saying to convert one or the other (``flow.double()``).

    References:
        NICE: Non-linear Independent Components Estimation. Dinh, Krueger, Bengio, 2014. arXiv:1410.8516.
        Variational Inference with Normalizing Flows. Rezende, Mohamed, 2015. arXiv:1505.05770.
        Learning Likelihoods with Conditional Normalizing Flows. Winkler, Worrall, Hoogeboom, Welling, 2019.
        arXiv:1912.00042.

    Example:
        >>> import torch
        >>> from flowlib.distributions import StandardNormal
        >>> from flowlib.transforms import Compose, Reverse, Scaling
        >>> flow = Flow(Compose(Scaling(2), Reverse()), StandardNormal(2))
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample(4).shape, flow.sample((5, 3)).shape
        (torch.Size([3]), torch.Size([4, 2]), torch.Size([5, 3, 2]))
        >>> x, log_prob = flow.sample_and_log_prob((4,))
        >>> torch.allclose(log_prob, flow.log_prob(x))
        True
        >>> normal_base = Flow(Scaling(2), torch.distributions.Normal(0.0, 1.0), event_shape=(2,))
        >>> normal_base.sample(3, temperature=0.5).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        transform: Transform,
        base: nn.Module | distributions.Distribution,
        event_shape: int | Sequence[int] | None = None,
    ):
        super().__init__()
        if isinstance(base, distributions.Distribution):
            base = TorchDistribution(base, event_shape)
        elif event_shape is not None:
            raise ValueError("event_shape is only for a torch.distributions base; a flowlib base knows its shape")
        self.transform = transform
        self.base = base

    # --- density ---------------------------------------------------------------------------------------------

    def _context(self, context: Tensor, batch_size: int) -> Tensor:
        """A ``(batch_size, K)`` context from ``(K,)`` (shared by the batch) or ``(batch_size, K)``."""
        if not any(getattr(module, "context_features", 0) for module in self.transform.modules()):
            raise ValueError(
                "this flow has no conditioner that takes a context (none was built with context_features > 0); "
                "leave context out, or build the couplings with conditioners that take context_features=K"
            )
        if context.dim() == 1:
            return context.expand(batch_size, -1)
        if context.dim() != 2 or context.shape[0] != batch_size:
            raise ValueError(
                f"context must have shape (K,) or (B, K) with B = {batch_size} examples, got {tuple(context.shape)}"
            )
        return context

    def _parameter_dtype(self) -> torch.dtype | None:
        """The flow's dtype, read from its first floating parameter, remembered (not registered) so that the check
        costs nanoseconds; ``model.double()`` converts that parameter in place, so the answer follows."""
        reference = self.__dict__.get("_dtype_reference")
        if reference is None:
            parameter = next((p for p in self.parameters() if p.is_floating_point()), None)
            if parameter is None:  # no parameters (fixed layers): ask the buffers each time
                return module_dtype(self)
            reference = self.__dict__["_dtype_reference"] = (parameter,)
        return reference[0].dtype

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, ...) -> (B,)`` log-density of ``x`` in nats (given ``context`` ``(B, K)`` or ``(K,)``)."""
        check_dtype(type(self).__name__, x, self._parameter_dtype())
        if context is None:
            z, logabsdet = self.transform(x)
        else:
            z, logabsdet = self.transform(x, context=self._context(context, x.shape[0]))
        return self.base.log_prob(z) + logabsdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.log_prob(x, context)

    def bits_per_dim(self, x: Tensor, bin_width: float = 1 / 256, context: Tensor | None = None) -> Tensor:
        """``(B,)`` bits per dimension of ``x`` (see :func:`flowlib.metrics.bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x, context), num_dims=math.prod(x.shape[1:]), bin_width=bin_width)

    # --- sampling --------------------------------------------------------------------------------------------

    def _sample(
        self, sample_shape: int | Sequence[int], temperature: float, context: Tensor | None, with_log_prob: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Draw ``z`` from the base, map it through the inverse; ``log p(x) = log pi(z) - log|det dx/dz|``."""
        shape = _sample_shape(sample_shape)
        num_samples = math.prod(shape)
        batch: tuple[int, ...] = ()
        if context is not None:
            batch = (context.shape[0],) if context.dim() == 2 else ()
            rows = self._context(context, context.shape[0] if context.dim() == 2 else 1)
            context = rows.repeat(num_samples, 1)  # sample-major: draw s of context row b is row s * B + b
        z = self.base.sample(num_samples * math.prod(batch), temperature=temperature)
        if context is None:
            x, inverse_logabsdet = self.transform.inverse(z)
        else:
            x, inverse_logabsdet = self.transform.inverse(z, context=context)
        x = x.reshape(*shape, *batch, *x.shape[1:])
        if not with_log_prob:
            return x, None
        log_prob = self.base.log_prob(z) - inverse_logabsdet  # the flow's density at x (whatever the temperature)
        return x, log_prob.reshape(*shape, *batch)

    def sample(
        self, sample_shape: int | Sequence[int] = (), temperature: float = 1.0, context: Tensor | None = None
    ) -> Tensor:
        """Draws ``f^{-1}(z)``, ``z`` from the base at ``temperature``, of shape ``(*sample_shape, *event_shape)``.

        No gradients (as ``torch.distributions``); use :meth:`rsample` to differentiate through the draws. An int
        ``sample_shape`` means ``(sample_shape,)``. Factor-out layers sample their dropped parts at their own
        ``temperature`` attribute. With ``context`` ``(B, K)`` the shape is ``(*sample_shape, B, *event_shape)``.
        """
        with torch.no_grad():
            return self._sample(sample_shape, temperature, context, with_log_prob=False)[0]

    def rsample(
        self, sample_shape: int | Sequence[int] = (), temperature: float = 1.0, context: Tensor | None = None
    ) -> Tensor:
        """:meth:`sample` with gradients flowing through the draws to the flow's parameters (reparameterised)."""
        return self._sample(sample_shape, temperature, context, with_log_prob=False)[0]

    def sample_and_log_prob(
        self, sample_shape: int | Sequence[int] = (), temperature: float = 1.0, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x, log p(x))`` in one pass through the inverse, without gradients; shapes as :meth:`sample`, the
        log-density without the event dimensions. At ``temperature != 1`` it is still the flow's own density."""
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape, temperature, context)

    def rsample_and_log_prob(
        self, sample_shape: int | Sequence[int] = (), temperature: float = 1.0, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`sample_and_log_prob` with gradients (e.g. for a reverse-KL or variational objective)."""
        x, log_prob = self._sample(sample_shape, temperature, context, with_log_prob=True)
        assert log_prob is not None
        return x, log_prob
