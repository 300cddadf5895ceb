"""The stem convolution's input gradient by phases equals PyTorch's (featviz.core.stem_conv)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featviz.core import stem_conv

pytestmark = pytest.mark.usefixtures("one_thread")


def _both(x, weight, bias, stride, padding):
    """Output and input gradient of a weighted sum, by phases and by PyTorch."""
    results = []
    for phases in (True, False):
        xi = x.detach().requires_grad_(True)
        out = (stem_conv.stem_conv2d(xi, weight, bias, stride, padding) if phases
               else F.conv2d(xi, weight, bias, stride, padding))
        grad, = torch.autograd.grad((out * torch.linspace(-2, 3, out.numel()).view_as(out))
                                    .sum(), xi)
        results.append((out.detach(), grad))
    return results


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [
    (7, 2, 3, 64), (7, 2, 3, 61), (7, 2, 3, 62), (7, 2, 3, 63),  # ResNet's, InceptionV1's
    (3, 2, 1, 32), (3, 2, 1, 33), (3, 2, 1, 34), (3, 2, 1, 35),  # MobileNetV2's
    (3, 2, 0, 33), (4, 2, 1, 30), (5, 3, 2, 29), (1, 2, 0, 16), (7, 2, 0, 40)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_gradient_by_phases_is_pytorchs(kernel, stride, padding, size, layout):
    """Kernels, strides, paddings and odd sizes: the same output to the bit, the same input
    gradient up to float rounding, in the input's memory layout."""
    torch.manual_seed(kernel * 100 + stride * 10 + padding + size)
    x = torch.randn(2, 1 if stride == 3 else 3, size, size).contiguous(memory_format=layout)
    weight = torch.randn(8, x.shape[1], kernel, kernel)
    bias = torch.randn(8)
    assert stem_conv.applies(x.requires_grad_(True), weight, (stride, stride),
                             (padding, padding), (1, 1), 1)
    (out, grad), (their_out, their_grad) = _both(x, weight, bias, (stride, stride),
                                                 (padding, padding))
    assert torch.equal(out, their_out)
    torch.testing.assert_close(grad, their_grad, rtol=1e-5, atol=1e-4)
    assert grad.is_contiguous(memory_format=layout)


def test_only_what_it_serves():
    """Many channels, stride 1, a weight that takes gradients, dilation, groups, uneven
    padding or an input without a gradient: PyTorch's own convolution."""
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    ok = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    assert stem_conv.applies(x, w, **ok)
    assert not stem_conv.applies(torch.randn(1, 8, 16, 16, requires_grad=True),
                                 torch.randn(4, 8, 3, 3), **ok)
    assert not stem_conv.applies(x, w, **{**ok, "stride": (1, 1)})
    assert not stem_conv.applies(x, w.requires_grad_(True), **ok)
    assert not stem_conv.applies(x, w.detach(), **{**ok, "dilation": (2, 2)})
    assert not stem_conv.applies(x, w.detach(), **{**ok, "padding": (1, 0)})
    assert not stem_conv.applies(x.detach(), w.detach(), **ok)
    with torch.no_grad():
        assert not stem_conv.applies(x, w.detach(), **ok)
    with pytest.raises(ValueError, match="no gradient to the weight or the bias"):
        stem_conv.stem_conv2d(x, w.detach(), torch.zeros(4, requires_grad=True), (2, 2),
                              (1, 1))


def test_a_rectangular_image():
    """Even rows and odd columns (ResNet's stem): the gradient of each axis by its phases."""
    torch.manual_seed(0)
    x, weight = torch.randn(1, 3, 36, 47), torch.randn(4, 3, 7, 7)
    (out, grad), (their_out, their_grad) = _both(x, weight, None, (2, 2), (3, 3))
    assert torch.equal(out, their_out)
    torch.testing.assert_close(grad, their_grad, rtol=1e-5, atol=1e-4)


def test_under_autocast_the_gradient_comes_back_in_the_inputs_dtype():
    """bf16 autocast (render's amp=True): the output in bf16, the input gradient as the
    autocast convolution gives it, in the input's float32."""
    torch.manual_seed(0)
    x, weight = torch.rand(2, 3, 32, 32), torch.randn(8, 3, 3, 3)
    grads = []
    for phases in (True, False):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            out = (stem_conv.stem_conv2d(xi, weight, None, (2, 2), (1, 1)) if phases
                   else F.conv2d(xi, weight, None, 2, 1))
        assert out.dtype == torch.bfloat16
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append(xi.grad)
    assert grads[0].dtype == torch.float32
    torch.testing.assert_close(grads[0], grads[1], rtol=2e-2, atol=2e-2)


def test_fits_reads_the_shape():
    assert stem_conv.fits(3, (7, 7), (2, 2), (3, 3), (1, 1), 1)  # ResNet, InceptionV1
    assert stem_conv.fits(3, (3, 3), (2, 2), (1, 1), (1, 1), 1)  # MobileNetV2
    assert not stem_conv.fits(16, (3, 3), (2, 2), (1, 1), (1, 1), 1)  # too many channels
    assert not stem_conv.fits(3, (3, 5), (2, 2), (1, 1), (1, 1), 1)
    assert not stem_conv.fits(3, (3, 3), (2, 1), (1, 1), (1, 1), 1)
    assert not stem_conv.fits(3, (3, 3), (2, 2), "same", (1, 1), 1)
    assert not stem_conv.fits(3, (3, 3), (2, 2), (1, 1), (1, 1), 3)
