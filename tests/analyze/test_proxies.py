"""Each training-free proxy against its published formula, written out by hand in numpy on a
tiny network (a 2-layer ReLU MLP, or 1x1 convs with BatchNorm for Zen-score)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from scaling_lab.analyze import proxies


def _mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _weights(net: nn.Sequential) -> tuple[np.ndarray, ...]:
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in net.parameters())
    return w1, b1, w2, b2


def _inputs() -> torch.Tensor:
    return torch.randn(7, 4, generator=torch.Generator().manual_seed(1))


def _half_square(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (net(x) ** 2).sum()


def _forward(x: np.ndarray, w1, b1, w2, b2):
    z = x @ w1.T + b1
    h = np.maximum(z, 0)
    return z, h, h @ w2.T + b2


def test_naswot_is_log_det_of_hamming_kernel():
    net, x = _mlp(), _inputs()
    z, _, _ = _forward(x.double().numpy(), *_weights(net))
    codes = (z > 0).astype(int)
    n_units = codes.shape[1]
    kernel = np.array([[n_units - np.sum(a != b) for b in codes] for a in codes], dtype=float)
    assert proxies.naswot(net, x) == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-9)


def test_synflow_is_sum_of_abs_theta_times_gradient_on_ones():
    net = _mlp()
    w1, b1, w2, b2 = (np.abs(a) for a in _weights(net))
    h = w1 @ np.ones(4) + b1  # all positive: every ReLU passes
    s = w2.sum(0)  # dR/dh_j with R = sum_k (W2 h + b2)_k
    expected = (w2 * h).sum() + b2.sum() + (s[:, None] * w1).sum() + (s * b1).sum()
    assert proxies.synflow(net, torch.zeros(5, 4)) == pytest.approx(expected, rel=1e-12)


def _loss_gradients(net, x):
    """dL/dtheta of L = 1/2 sum y^2, by the chain rule written out."""
    w1, b1, w2, b2 = _weights(net)
    x = x.double().numpy()
    z, h, y = _forward(x, w1, b1, w2, b2)
    dz = (y @ w2) * (z > 0)
    return (w1, b1, w2, b2), (dz.T @ x, dz.sum(0), y.T @ h, y.sum(0)), (h, y @ w2)


def test_grad_norm_is_norm_of_loss_gradient():
    net, x = _mlp(), _inputs()
    _, grads, _ = _loss_gradients(net, x)
    expected = math.sqrt(sum((g**2).sum() for g in grads))
    assert proxies.grad_norm(net, x, _half_square) == pytest.approx(expected, rel=1e-6)


def test_snip_is_sum_of_abs_theta_times_loss_gradient():
    net, x = _mlp(), _inputs()
    params, grads, _ = _loss_gradients(net, x)
    expected = sum(np.abs(p * g).sum() for p, g in zip(params, grads))
    assert proxies.snip(net, x, _half_square) == pytest.approx(expected, rel=1e-6)


def test_fisher_is_half_squared_activation_times_gradient():
    net, x = _mlp(), _inputs()
    _, _, (act, act_grad) = _loss_gradients(net, x)
    expected = 0.5 * ((act * act_grad) ** 2).mean(0).sum()
    assert proxies.fisher(net, x, _half_square) == pytest.approx(expected, rel=1e-6)


def test_jacov_scores_correlation_eigenvalues_of_input_jacobians():
    net, x = _mlp(), _inputs()
    w1, _b1, w2, _ = _weights(net)
    z, _, _ = _forward(x.double().numpy(), *_weights(net))
    # d(sum_k y_k)/dx = W1^T diag(z > 0) W2^T 1, image by image
    jac = np.stack([w1.T @ ((zi > 0) * w2.sum(0)) for zi in z])
    eig = np.linalg.eigvalsh(np.corrcoef(jac))
    k = 1e-5
    expected = -np.sum(np.log(eig + k) + 1 / (eig + k))
    assert proxies.jacov(net, x) == pytest.approx(expected, rel=1e-5)


def test_zen_score_is_log_feature_gap_plus_bn_scales():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    seed, alpha = 4, 0.01
    # the same draws as zen_score: eps from its own generator, weights from the global one
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).double().numpy()
    torch.manual_seed(seed)
    drawn = copy.deepcopy(net)
    proxies.gaussian_init(drawn)
    w1, b1 = (
        drawn[0].weight[:, :, 0, 0].detach().double().numpy(),
        drawn[0].bias.detach().double().numpy(),
    )
    w2, b2 = (
        drawn[3].weight[:, :, 0, 0].detach().double().numpy(),
        drawn[3].bias.detach().double().numpy(),
    )

    def features(inp: np.ndarray) -> tuple[np.ndarray, float]:
        z = np.einsum("oc,bchw->bohw", w1, inp) + b1[None, :, None, None]
        var = z.var(axis=(0, 2, 3))
        normed = (z - z.mean(axis=(0, 2, 3))[None, :, None, None]) / np.sqrt(
            var[None, :, None, None] + 1e-5
        )
        out = np.einsum("oc,bchw->bohw", w2, np.maximum(normed, 0)) + b2[None, :, None, None]
        return out.reshape(len(inp), -1), float(var.mean())

    clean, mean_var = features(x.double().numpy())
    noisy, _ = features(x.double().numpy() + alpha * eps)
    gap = np.linalg.norm(clean - noisy, axis=1).mean()
    expected = math.log(gap) + 0.5 * math.log(mean_var)
    assert proxies.zen_score(net, x, seed=seed, alpha=alpha) == pytest.approx(expected, rel=1e-4)


def test_proxies_are_deterministic_and_leave_the_model_alone():
    net, x = _mlp(), _inputs()
    before = [p.detach().clone() for p in net.parameters()]
    first = proxies.all_proxies(net, x, _half_square, seed=5)
    assert proxies.all_proxies(net, x, _half_square, seed=5) == first
    assert set(first) == set(proxies.PROXIES)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    assert math.isnan(proxies.all_proxies(net, x, None)["grad_norm"])


def test_zen_score_reads_detector_head_inputs():
    """On a detector the features are the Detect module's inputs, not its output."""
    from scaling_lab.models import create_model, get_block_graph

    model = create_model(get_block_graph("yolov7-tiny", nc=2, img_size=64))
    assert type(proxies.head_inputs(model)).__name__ == "Detect"
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(proxies.zen_score(model, images))
