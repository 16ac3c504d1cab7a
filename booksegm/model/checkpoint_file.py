"""Reading a model file safely: ``torch.load`` with ``weights_only=True`` (tensors and plain values
only, so a file cannot run code as it loads), and a one-line CheckpointError that says what the file
is when it is not a checkpoint. Used for ``ckpt_path`` and ``model.weights`` alike."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from booksegm.errors import UserError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (since torch 1.6)
TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F})  # what `file` counts as text
# torch's words for a class or function it will not unpickle: one it does not allow, or one of a module
# it blocks outright (os.system: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked")
UNSAFE_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)")
MODEL_FILES = "booksegm reads a Lightning .ckpt or an exported state dict .pth"


class CheckpointError(UserError, ValueError):
    """A model file that cannot be loaded; the message names the file and the problem."""


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
