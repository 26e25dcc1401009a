"""course_utils: helpers for the Saliency Maps course.

Modules: `data` (offline MNIST digits), `models` (small CNNs, training,
shipped checkpoints), `saliency` (one module per method), `reference`
(the same methods via Captum), `shapley` (exact Shapley values, KernelSHAP),
`sanity`, `metrics`, `plotting`, `widgets`,
`grading`.
"""

__version__ = "0.1.0"


def show(obj) -> None:
    """Print the source of a course_utils function or class (for reading it in class)."""
    import inspect

    print(inspect.getsource(obj))
