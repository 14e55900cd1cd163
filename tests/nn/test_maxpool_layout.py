"""The training-time max pooling (channels-last on the CPU) against torch's plain
``nn.MaxPool2d``: the same outputs, the same gradients, ties included."""

import pytest
import torch
from torch import nn

from scaling_lab.ops.layout import MaxPool
from scaling_lab.ops.modules import MaxPool2d


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 1), (5, 1, 2), (9, 1, 4), (13, 1, 6)])
def test_same_values_and_gradients_as_plain_pooling(dtype, k, s, p):
    torch.manual_seed(0)
    # three levels only: most windows hold ties, where the two layouts' kernels could route
    # the gradient to different elements
    x = torch.randint(0, 3, (2, 8, 13, 13)).to(dtype)
    fast, plain = MaxPool2d(k, s, p).train(), nn.MaxPool2d(k, s, p)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(a), plain(b)
    assert torch.equal(ya, yb)
    assert ya.is_contiguous()  # the next layer sees the layout it would have seen
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace, as fvcore uses it
def test_ops_build_it_and_inference_and_tracing_stay_plain():
    module = MaxPool(k=2, s=2, p=0).build()
    assert isinstance(module, MaxPool2d) and isinstance(module, nn.MaxPool2d)
    x = torch.rand(1, 4, 8, 8)
    # a trace (fvcore's counter, ONNX) records the plain pooling, without layout copies
    traced = torch.jit.trace(module.train(), x)
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "aten::max_pool2d" in kinds and "aten::contiguous" not in kinds
    assert torch.equal(module.eval()(x), nn.functional.max_pool2d(x, 2, 2))
