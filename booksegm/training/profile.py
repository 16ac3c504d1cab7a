"""The training profile a bare ``booksegm train`` picks: ``gpu`` with CUDA, else ``cpu``.

The choice cannot live in config.yaml's defaults list: an interpolated entry there (a resolver asking
torch) may not hold the GPU profile's ``override /model``. So the entry point adds ``profile=gpu`` to
the command line before Hydra reads it, as the first of its overrides: argparse takes the overrides
as one run of words, before or after Hydra's flags (``--cfg job``, ``--info``, ``-m``), so a word
added anywhere else would be refused. A command line that names a profile keeps it: ``booksegm
train profile=cpu`` on a GPU box.
"""

from __future__ import annotations

import re

import torch
from omegaconf import OmegaConf

from booksegm.config import read_command_line

NAMES_A_PROFILE = re.compile(r"^[+~]{0,2}profile(=|$)")


def default_profile() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def with_profile(argv: list[str]) -> list[str]:
    """``argv`` (program first) with ``profile=<default_profile()>`` before its first override (first of
    all without one) unless an override names a profile. A command line Hydra refuses is left as it
    is: Hydra then says what is wrong with it, as without a profile."""
    args = read_command_line(argv)
    # --hydra-help composes Hydra's own config alone, which refuses any override
    if args is None or args.hydra_help or any(NAMES_A_PROFILE.match(arg) for arg in args.overrides):
        return list(argv)
    overrides = args.overrides
    at = next((i for i in range(1, len(argv)) if argv[i:i + len(overrides)] == overrides), 1) if overrides else 1
    return [*argv[:at], f"profile={default_profile()}", *argv[at:]]


def auto_precision() -> str:
    """Lightning's precision: AMP on CUDA (bf16 where the GPU has it: no loss scaling), fp32 on CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
