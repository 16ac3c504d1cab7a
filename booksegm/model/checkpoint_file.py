"""Reading a model file safely: ``torch.load`` with ``weights_only=True`` (tensors and plain values
only, so a file cannot run code as it loads), and a one-line CheckpointError that says what the file
is when it is not a checkpoint. Used for ``ckpt_path`` and ``model.weights`` alike.

Writing one whole or not at all: training saves every checkpoint through :class:`AtomicCheckpointIO`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from booksegm.errors import UserError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F})  # what `file` counts as text
# torch's words for a class or function it will not unpickle: one it does not allow, or one of a module
# it blocks outright (os.system: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked")
UNSAFE_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)")
MODEL_FILES = "booksegm reads a Lightning .ckpt or an exported state dict .pth"
SCORE_THRESHOLD_KEY = "score_threshold"  # checkpoint entry: the F1-best score of the last validation
DEFAULT_SCORE_THRESHOLD = 0.7  # matterport's DETECTION_MIN_CONFIDENCE, for a model without a calibrated score
RUN_CONFIG_KEY = "booksegm_config"  # checkpoint entry: the run's resolved config (data, model, train, trainer)


class CheckpointError(UserError, ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint that could not be written (a full disk, a file-size limit); the earlier one is kept."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, written to a temporary file beside the checkpoint, synced, then
    renamed over it: a write that fails, or a machine that stops mid-write, leaves the earlier
    checkpoint whole; the failure is one line naming the folder and its free space."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        buffer = io.BytesIO()  # serialised first: torch.save turns a failed file write into a RuntimeError
        torch.save(checkpoint, buffer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(buffer.getbuffer())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"cannot write the checkpoint {path.name} in {path.parent}: {err.strerror or err} "
                f"({free_space(path.parent)} free there); the checkpoints already there are left as they were"
            ) from None


def free_space(folder: Path) -> str:
    """The free space of the disk holding ``folder`` (or its nearest existing parent), as ``12.3 GB``."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return f"{shutil.disk_usage(folder).free / 1e9:.1f} GB"


def read_torch_file(path: Path) -> dict:
    """A checkpoint or state dict, loaded with ``weights_only=True`` (tensors and plain values only:
    a file cannot run code as it loads). A file that cannot be loaded is a one-line CheckpointError
    saying what the file is instead."""
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: the file is empty (a save or copy cut short?)")
    names = archive_names(path, head)
    if any(name.endswith("/constants.pkl") for name in names or ()):  # torch.load would hand it to torch.jit.load
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: a TorchScript export "
                              f"(it runs on its own, with torch.jit.load; {MODEL_FILES})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{path}: {why_unreadable(err, head, names)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a checkpoint or a state dict")
    return data


def archive_names(path: Path, head: bytes) -> list[str] | None:
    """The files in a zip archive (none when its directory is lost: a truncated file); None for a
    file that is no zip archive at all."""
    try:
        with zipfile.ZipFile(path) as archive:  # reads the directory at the end of the file
            return archive.namelist()
    except zipfile.BadZipFile:
        return [] if head.startswith(ZIP_MAGIC) else None


def why_unreadable(err: Exception, head: bytes, names: list[str] | None) -> str:
    """Why torch.load(weights_only=True) failed, from the file itself rather than torch's message,
    which advises weights_only=False: unsafe for a file from elsewhere."""
    unsafe = UNSAFE_GLOBAL.search(str(err))
    if unsafe:
        return (f"refused: loading it would execute arbitrary code (it pickles {unsafe[1]}, which loading with "
                "weights_only=True does not allow); booksegm's checkpoints hold only tensors and plain values")
    if names is not None:
        if names and not any(name.endswith("/data.pkl") for name in names):
            return "not a readable PyTorch checkpoint: a zip archive that torch.save did not write"
        return "not a readable PyTorch checkpoint: a damaged archive (truncated or corrupted: save or copy it again)"
    if not head.translate(None, TEXT_BYTES):
        return "not a readable PyTorch checkpoint: a text file"
    return ("not a readable PyTorch checkpoint: neither torch.save's zip archive nor its older pickle "
            f"(an ONNX export? it runs on its own; {MODEL_FILES})")


def display_threshold(requested: float | None, calibrated: float | None) -> float:
    """The score from which detections are shown and counted: the one asked for, else the model's
    calibrated one (the F1-best of its last validation), else matterport's default."""
    return next((t for t in (requested, calibrated) if t is not None), DEFAULT_SCORE_THRESHOLD)
