"""The training profile a bare ``booksegm train`` picks: ``gpu`` with CUDA, else ``cpu``.

Hydra's defaults list cannot ask torch whether CUDA is there (its interpolations name other config
groups, never resolvers), so the entry point adds ``profile=gpu`` to the command line before Hydra
reads it. A command line that names a profile keeps it: ``booksegm train profile=cpu`` on a GPU box.
"""

from __future__ import annotations

import re

import torch
from omegaconf import OmegaConf

NAMES_A_PROFILE = re.compile(r"^[+~]{0,2}profile(=|$)")


def default_profile() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def with_profile(argv: list[str]) -> list[str]:
    """``argv`` (program first) with ``profile=<default_profile()>`` added unless an argument names one."""
    if any(NAMES_A_PROFILE.match(arg) for arg in argv[1:]):
        return list(argv)
    return [*argv, f"profile={default_profile()}"]


def auto_precision() -> str:
    """Lightning's precision: AMP on CUDA (bf16 where the GPU has it: no loss scaling), fp32 on CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
