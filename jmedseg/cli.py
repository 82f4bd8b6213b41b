"""Shared command-line plumbing: config arguments and one-line errors instead of tracebacks."""
import argparse
import os
import sys
import traceback
from pathlib import Path

from . import distributed as dist
from .errors import JMedSegError

__all__ = ["run_tool", "add_config_args", "config_from_args", "new_parser", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_tool(main, argv=None):
    """Call ``main(argv)``; print expected failures as ``error: …`` (exit 2), tracebacks only with --debug.

    Under ``mpirun`` only rank 0's standard output is kept (the ranks would print the same lines);
    errors are printed by every rank, tagged with it, and a failing rank ends the whole job.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    where = f" (rank {dist.rank()})" if dist.is_distributed() else ""
    if not dist.is_main():
        sys.stdout = open(os.devnull, "w")
    from model_zoo import ModelZooError

    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (JMedSegError, ModelZooError, FloatingPointError) as err:
        if debug:
            traceback.print_exc()
        print(f"error{where}: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def add_config_args(parser, model_required=False):
    """The arguments every training-like tool shares."""
    parser.add_argument("--model", required=model_required, help="registered model name (see list_models())")
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--data", help="dataset root with <split>/images and <split>/masks "
                                       "(default: the embedded synthetic dataset, or $JMEDSEG_DATA/<name>)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set train.lr=1e-3 data.patch_size=128")
    parser.add_argument("--seed", type=int, help="random seed (train.seed)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device (default: auto)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def config_from_args(args):
    """Load the config named by ``--config`` and apply ``--model/--data/--seed/--device/--set``."""
    from .config import load_config

    overrides = []
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.data:
        overrides.append(f"data.root={Path(args.data).resolve()}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device:
        overrides.append(f"device={args.device}")
    path = args.config or REPO_ROOT / "configs" / "default.yaml"
    return load_config(path, overrides + list(args.set))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help, unless the help already names it or there is
    no value to show (an unset option or an off switch would read "(default: None)")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def new_parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
