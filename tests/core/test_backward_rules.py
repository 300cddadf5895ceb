"""Backward rules reach ReLUs however a model calls them, and follow their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ReusedReluNet, hook_free

from featviz.backward_rules import ReluBackwardRule


def _grad(fn, x, g, rule=None):
    x = x.clone().requires_grad_(True)
    if rule:
        with ReluBackwardRule(rule):
            y = fn(x * 1.0)  # non-leaf, so in-place variants are allowed
    else:
        y = fn(x * 1.0)
    y.backward(g)
    return x.grad


CALLS = [
    lambda x: F.relu(x),
    lambda x: torch.relu(x),
    lambda x: x.relu(),
    lambda x: F.relu(x, inplace=True),
    lambda x: torch.relu_(x),
    lambda x: x.relu_(),
    lambda x: torch.nn.ReLU(inplace=True)(x),
    lambda x: torch.nn.ReLU6()(x),
    lambda x: F.relu6(x),
    lambda x: F.hardtanh(x, 0.0, 6.0),
]


@pytest.mark.parametrize("call", range(len(CALLS)))
def test_rules_on_every_spelling(call):
    fn = CALLS[call]
    torch.manual_seed(call)
    x = torch.randn(2, 3, 5, 5) * 4
    g = torch.randn(2, 3, 5, 5)
    hi = 6.0 if call >= 7 else float("inf")
    mask = ((x > 0) & (x < hi)).float()
    # the forward is unchanged, whatever the rule
    with ReluBackwardRule("guided"):
        y = fn(x.clone().requires_grad_(True) * 1.0)
    torch.testing.assert_close(y, x.clamp(0, hi))
    torch.testing.assert_close(_grad(fn, x, g), g * mask)
    torch.testing.assert_close(_grad(fn, x, g, "deconvnet"), g.clamp_min(0))
    torch.testing.assert_close(_grad(fn, x, g, "guided"), g.clamp_min(0) * mask)


def test_redirect_only_for_dead_elements():
    x = torch.tensor([[-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]])
    g = torch.tensor([[-1.0, 1.0, 2.0], [-1.0, 1.0, -2.0]])
    grad = _grad(F.relu, x, g, "redirect")
    # element 0 has a live unit: the normal gradient
    torch.testing.assert_close(grad[0], torch.tensor([0.0, 0.0, 2.0]))
    # element 1 is dead: gradients that push x up (negative loss gradient) pass
    torch.testing.assert_close(grad[1], torch.tensor([-1.0, 0.0, -2.0]))


def test_redirect_keeps_the_normal_gradient_where_all_live_and_bounds_the_top():
    """A batch whose every element has a live unit gets the plain gradient; on a bounded ReLU
    (ReLU6) a dead element's gradient passes where it pushes a value back below the top."""
    x = torch.tensor([[1.0, -1.0, 7.0], [2.0, -3.0, 0.5]])
    g = torch.tensor([[2.0, -3.0, -1.0], [-1.0, 1.0, 4.0]])
    mask = ((x > 0) & (x < 6)).float()
    torch.testing.assert_close(_grad(F.relu6, x, g, "redirect"), g * mask)
    dead = torch.tensor([[-1.0, 7.0, 8.0, -2.0]])
    pushes = torch.tensor([[-1.0, 2.0, -2.0, 3.0]])  # up, down (in), up (out), down (out)
    torch.testing.assert_close(_grad(F.relu6, dead, pushes, "redirect"),
                               torch.tensor([[-1.0, 2.0, 0.0, 0.0]]))


def test_reused_module_gets_rule_each_call():
    model = ReusedReluNet()
    rule = ReluBackwardRule("deconvnet")
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with rule:
        model(x).sum().backward()
    assert rule.calls == 2
    assert hook_free(model)


def test_true_hardtanh_untouched():
    x = torch.randn(10) * 3
    rule = ReluBackwardRule("deconvnet")
    g = torch.randn(10)
    xa = x.clone().requires_grad_(True)
    with rule:
        F.hardtanh(xa * 1.0).backward(g)
    assert rule.calls == 0
    torch.testing.assert_close(xa.grad, g * ((x > -1) & (x < 1)).float())


def test_unknown_rule():
    with pytest.raises(ValueError, match="guided"):
        ReluBackwardRule("lrp")
