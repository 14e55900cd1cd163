"""Training-free proxies: scores of an untrained network that may rank designs like their
trained accuracy does, computed from one batch of the experiment's own training images.

NAS-Bench-Suite-Zero found that no proxy ranks designs well everywhere (and on synthetic data
almost none does), so these are inputs to ``lab calibrate --proxies``, which measures each
one's Kendall tau with the trained AP of the calibration designs; never trust one blindly.

Every function takes a torch model and a batch ``images`` (B, 3, H, W), restores the model's
weights, buffers and modes after (its gradients are cleared), seeds what it draws from
``seed`` and returns a float. Detectors return a list of per-level tensors in training mode;
"the output" below is their concatenation, flattened per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.Mish, nn.GELU)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
JACOV_K = 1e-5  # Mellor et al.'s regularizer of the correlation eigenvalues
LossFn = Callable[[nn.Module, Tensor], Tensor]


def flat_output(output: Tensor | list | tuple) -> Tensor:
    """A model's output(s) as (B, N): per-level detector outputs flattened and concatenated."""
    if isinstance(output, Tensor):
        return output.flatten(1)
    return torch.cat([flat_output(o) for o in output], 1)


@contextmanager
def _scratch(model: nn.Module, dtype: torch.dtype = torch.float32) -> Iterator[nn.Module]:
    """``model`` itself in ``dtype``, its weights, buffers, dtype and modes restored after
    and its gradients cleared (a deep copy of a generated fx module costs 0.4 s, more than
    most proxies)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {m: m.training for m in model.modules()}
    original = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        model.to(dtype).zero_grad(set_to_none=True)
        yield model
    finally:
        model.to(original).load_state_dict(state)
        model.zero_grad(set_to_none=True)
        for m, training in modes.items():
            m.training = training


@contextmanager
def _hooks(modules: Sequence[nn.Module], hook: Callable) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def activation_codes(model: nn.Module, images: Tensor) -> Tensor:
    """(B, units) binary codes: 1 where an activation layer's input (pre-activation) is
    positive. For ReLU this is Mellor et al.'s linear-region code; for SiLU / LeakyReLU the
    sign of the pre-activation plays the same role."""
    codes: list[Tensor] = []

    def keep(_m: nn.Module, inputs: tuple, _out: Tensor) -> None:
        # an in-place activation has overwritten its input by now; each of ACTIVATIONS keeps
        # the sign (f(x) > 0 iff x > 0), so the code is the same
        codes.append((inputs[0].detach() > 0).flatten(1).double())

    layers = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    with _hooks(layers, keep), torch.no_grad():
        model(images)
    if not codes:
        raise ValueError("the model has no activation layer to take codes from")
    return torch.cat(codes, 1)


def naswot(model: nn.Module, images: Tensor, seed: int = 0) -> float:
    """NASWOT (Mellor et al. 2021, "Neural Architecture Search without Training", ICML):
    log |det K_H|, K_H[i, j] = N_A - d_H(c_i, c_j), the units N_A minus the Hamming distance
    between the binary activation codes of images i and j, i.e. K_H = c c^T + (1 - c)(1 - c)^T.
    BatchNorm in training mode (batch statistics), as the authors' code runs it."""
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        c = activation_codes(net, images.float())
        kernel = c @ c.T + (1 - c) @ (1 - c).T
        return float(torch.linalg.slogdet(kernel).logabsdet)


def synflow(model: nn.Module, images: Tensor, seed: int = 0) -> float:
    """Synaptic flow (Tanaka et al. 2020, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS): with every parameter replaced by its
    absolute value and an all-ones input, R = 1^T f(1) and the score is
    sum over parameters |theta * dR/dtheta|. In float64 with BatchNorm in eval mode, as the
    zero-cost-proxy literature computes it (Abdelfattah et al. 2021); ``images`` gives only
    the input shape (one image)."""
    torch.manual_seed(seed)
    with _scratch(model, torch.float64) as net:
        net.train()
        for m in net.modules():
            if isinstance(m, BATCH_NORMS):
                m.eval()
        with torch.no_grad():
            for p in net.parameters():
                p.abs_()
        ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64)
        flat_output(net(ones)).sum().backward()
        total = sum((p * p.grad).abs().sum() for p in net.parameters() if p.grad is not None)
        return float(total.detach()) if isinstance(total, Tensor) else float(total)


def grad_norm(model: nn.Module, images: Tensor, loss_fn: LossFn, seed: int = 0) -> float:
    """Gradient norm (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS",
    ICLR): the Euclidean norm of the training loss's gradient over all parameters at
    initialization, ||dL/dtheta||_2, on one batch. ``loss_fn(model, images)`` -> scalar."""
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        loss_fn(net, images.float()).backward()
        squares = sum((p.grad.double() ** 2).sum() for p in net.parameters() if p.grad is not None)
        return float(torch.sqrt(torch.as_tensor(squares)))


def snip(model: nn.Module, images: Tensor, loss_fn: LossFn, seed: int = 0) -> float:
    """SNIP (Lee et al. 2019, "SNIP: Single-shot network pruning based on connection
    sensitivity", ICLR), summed over parameters as a network score (Abdelfattah et al. 2021):
    sum |theta * dL/dtheta| of the training loss on one batch."""
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        loss_fn(net, images.float()).backward()
        with torch.no_grad():
            total = sum(
                (p.double() * p.grad.double()).abs().sum()
                for p in net.parameters()
                if p.grad is not None
            )
        return float(total)


def jacobian_codes(model: nn.Module, images: Tensor) -> Tensor:
    """(B, 3 H W): d(sum of image i's outputs) / d(image i), per image (an image's outputs
    depend on the other images only through BatchNorm's batch statistics, which the authors'
    code, like this one, lets through: it backpropagates ones from the whole batch)."""
    x = images.float().clone().requires_grad_(True)
    flat_output(model(x)).sum().backward()
    assert x.grad is not None
    return x.grad.flatten(1).double()


def jacov(model: nn.Module, images: Tensor, seed: int = 0) -> float:
    """Jacobian covariance (Mellor et al. 2020, "Neural Architecture Search without
    Training", arXiv v1): with J the per-image input Jacobians and sigma_J their correlation
    matrix with eigenvalues lambda_i, score = -sum_i [log(lambda_i + k) + 1 / (lambda_i + k)],
    k = 1e-5. Higher: less correlated Jacobians (images told apart at initialization)."""
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        corr = torch.corrcoef(jacobian_codes(net, images))
        eig = torch.linalg.eigvalsh(corr)
        return float(-(torch.log(eig + JACOV_K) + 1 / (eig + JACOV_K)).sum())


def head_inputs(model: nn.Module) -> nn.Module:
    """The module whose inputs are the "pre-head" features: a detector's Detect (or IDetect)
    module; a plain network: the model itself (its output)."""
    for m in model.modules():
        if type(m).__name__ in ("Detect", "IDetect", "IAuxDetect"):
            return m
    return model


def _features(net: nn.Module, x: Tensor) -> Tensor:
    target = head_inputs(net)
    if target is net:
        return flat_output(net(x))
    seen: list[Tensor] = []

    def keep(_m: nn.Module, inputs: tuple, _out: object) -> None:
        seen.append(flat_output(list(inputs[0]) if len(inputs) == 1 else list(inputs)))

    with _hooks([target], keep):
        net(x)
    return seen[0]


def gaussian_init(model: nn.Module) -> None:
    """Zen-NAS's initialization: conv and linear weights N(0, 1), biases 0, BatchNorm
    gamma 1 and beta 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, BATCH_NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def zen_score(model: nn.Module, images: Tensor, seed: int = 0, alpha: float = 0.01) -> float:
    """Zen-score (Lin et al. 2021, "Zen-NAS: A Zero-Shot NAS for High-Performance Image
    Recognition", ICCV): with weights re-drawn N(0, 1) (``gaussian_init``), f the pre-head
    feature maps and eps ~ N(0, I),
    Zen = log E_x ||f(x) - f(x + alpha eps)||_F + sum_i log sqrt(mean_j sigma_ij^2),
    sigma_ij^2 the batch variance of channel j at BatchNorm layer i (in the forward of x).
    x is the batch of training images (the paper draws x ~ N(0, I) as well)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        gaussian_init(net)
        x = images.float()
        eps = torch.randn(x.shape, generator=generator)
        variances: list[Tensor] = []

        def keep(_m: nn.Module, inputs: tuple, _out: Tensor) -> None:
            variances.append(inputs[0].detach().double().var(dim=(0, 2, 3), unbiased=False).mean())

        bns = [m for m in net.modules() if isinstance(m, BATCH_NORMS)]
        with torch.no_grad():
            with _hooks(bns, keep):
                clean = _features(net, x).double()
            noisy = _features(net, x + alpha * eps).double()
        delta = (clean - noisy).norm(dim=1).mean()
        correction = sum(0.5 * math.log(float(v)) for v in variances)
        return float(torch.log(delta)) + correction


def fisher(model: nn.Module, images: Tensor, loss_fn: LossFn, seed: int = 0) -> float:
    """Fisher (Turner et al. 2020, "BlockSwap"; as a network score in Abdelfattah et al.
    2021): sum over activation layers and channels of the batch mean of
    (1/2) (sum_spatial a dL/da)^2, a the activation layers' outputs: the loss change from
    removing each channel, to second order."""
    torch.manual_seed(seed)
    with _scratch(model) as net:
        net.train()
        acts: list[Tensor] = []

        def keep(_m: nn.Module, _inputs: tuple, out: Tensor) -> None:
            if out.requires_grad:
                out.retain_grad()
                acts.append(out)

        layers = [m for m in net.modules() if isinstance(m, ACTIVATIONS)]
        with _hooks(layers, keep):
            loss = loss_fn(net, images.float())
        loss.backward()
        total = 0.0
        for a in acts:
            if a.grad is None:
                continue
            per_channel = a.detach().double() * a.grad.double()
            if a.dim() > 2:  # (an empty dim tuple would sum everything)
                per_channel = per_channel.sum(dim=tuple(range(2, a.dim())))
            total += float(0.5 * (per_channel**2).mean(0).sum())
        return total


DATA_PROXIES: dict[str, Callable[..., float]] = {
    "naswot": naswot,
    "synflow": synflow,
    "jacov": jacov,
    "zen": zen_score,
}
LOSS_PROXIES: dict[str, Callable[..., float]] = {
    "grad_norm": grad_norm,
    "snip": snip,
    "fisher": fisher,
}
PROXIES = (*DATA_PROXIES, *LOSS_PROXIES)


def all_proxies(
    model: nn.Module,
    images: Tensor,
    loss_fn: LossFn | None,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Every proxy of ``model`` on ``images`` (``names``: only those; the loss-based ones NaN
    without ``loss_fn``); a proxy that fails numerically (a singular kernel, an overflow) is
    NaN, not an error."""
    wanted = PROXIES if names is None else tuple(names)
    unknown = [n for n in wanted if n not in PROXIES]
    if unknown:
        raise ValueError(f"unknown proxies {unknown} (known: {', '.join(PROXIES)})")
    out: dict[str, float] = {}
    for name in wanted:
        if name in DATA_PROXIES:
            out[name] = _finite(DATA_PROXIES[name], model, images, seed=seed)
        elif loss_fn is None:
            out[name] = math.nan
        else:
            out[name] = _finite(LOSS_PROXIES[name], model, images, loss_fn, seed=seed)
    return out


def _finite(fn: Callable[..., float], *args: object, **kwargs: object) -> float:
    try:
        value = fn(*args, **kwargs)
    except (RuntimeError, ValueError, torch.linalg.LinAlgError):
        return math.nan
    return value if math.isfinite(value) else math.nan
