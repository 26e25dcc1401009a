"""The `course` command: train models, and (instructors) release and grade.

    course train NAME [--epochs N] [--seed S]   rebuild weights/NAME.pt
    course info                                 versions, data, checkpoints

The grading subcommands (release, check, collect, grade, export, report, handout)
come from `course_utils.grading.cli.COMMANDS`, imported when `main` runs.
"""

from __future__ import annotations

import argparse
import sys


def _train(args) -> int:
    from . import models

    if args.name not in models.CHECKPOINTS:
        print(f"course train: NAME must be one of {models.known_models()}, "
              f"got {args.name!r}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    trainer = models.trainer_for(args.name)  # imports the recipe's module only now
    model, report = trainer(progress=not args.quiet, **overrides)
    path = models.save_checkpoint(model, args.name, meta=report)
    print(f"{args.name}: test accuracy {report['test_accuracy']:.4f}, "
          f"trained in {report['seconds']:.1f} s → {path}")
    return 0


def _info(args) -> int:
    import torch

    from . import data, models

    print(f"torch {torch.__version__}")
    try:
        import captum

        print(f"captum {captum.__version__}")
    except ImportError:
        print("captum: not installed")
    print(f"digits: train {len(data.load_split('train'))}, test {len(data.load_split('test'))}")
    for name in models.known_models():
        path = models.checkpoint_path(name)
        print(f"{name}: {'ok' if path.exists() else 'missing'} ({path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .grading.cli import COMMANDS

    parser = argparse.ArgumentParser(prog="course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train a shipped model and save its checkpoint")
    p.add_argument("name")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=_train)
    p = sub.add_parser("info", help="versions, data and checkpoints")
    p.set_defaults(fn=_info)
    for name, (fn, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if hasattr(fn, "configure"):
            fn.configure(p)
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
