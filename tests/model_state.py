"""A model's and an input's state before and after a saliency call, for the
no-side-effect tests (torchvision models, the photo model)."""

import torch


def snapshot(model, x):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "x": x.clone(),
        "x_version": x._version,
    }


def assert_unchanged(before, model, x, label=""):
    """Everything `snapshot` saw is as it was; `label` names the call on failure."""
    after = snapshot(model, x)
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), (label, k)
    for key in ("training", "requires_grad", "grads", "hooks", "inplace", "x_version"):
        assert before[key] == after[key], (label, key)
    assert torch.equal(before["x"], after["x"]), label
