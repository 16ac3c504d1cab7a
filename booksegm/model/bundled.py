"""Models that ship inside the package (``booksegm/bundled/NAME.pth``), loadable with no network.

Each is an exported state dict (``booksegm export format=state_dict``): ``NAME.pth`` with its
``NAME.json`` beside it, whose ``booksegm`` section rebuilds the model and whose ``card`` section
says how it was made (recipe, data, figures) and the sha256 of the ``.pth``. They are what
``model.weights=NAME`` starts training from and what evaluate, predict and export use when no
``ckpt_path`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from booksegm.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "books"  # what a command uses when no ckpt_path is given
CARD_SECTION = "card"  # the JSON's section that describes the model to people


class BundledModelError(UserError, RuntimeError):
    """A bundled model that is missing or whose file does not match its card."""


@dataclass(frozen=True)
class BundledModel:
    name: str
    weights: Path  # NAME.pth
    card: dict  # NAME.json's card section: recipe, data, figures, sha256

    def verify(self) -> str:
        """The file's sha256; an error when it is not the one its card records (a damaged install)."""
        digest = sha256_of(self.weights)
        if digest != self.card.get("sha256"):
            raise BundledModelError(
                f"bundled model {self.name!r}: {self.weights} has sha256 {digest}, its card says "
                f"{self.card.get('sha256')}: reinstall booksegm"
            )
        return digest


def bundled_folder() -> Path:
    return Path(str(files("booksegm") / "bundled"))


def bundled_path(name: str) -> Path:
    """Where the bundled model ``name``'s weights live (or go)."""
    return bundled_folder() / f"{name}.pth"


def is_bundled(name: str) -> bool:
    """Whether ``name`` names a bundled model (a look at one file, not a read of every card)."""
    return "/" not in name and bundled_path(name).is_file()


def bundled_models() -> dict[str, BundledModel]:
    """Every model in the package, by name."""
    models = {}
    for weights in sorted(bundled_folder().glob("*.pth")):
        card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8")).get(CARD_SECTION, {})
        models[weights.stem] = BundledModel(weights.stem, weights, card)
    return models


def bundled_model(name: str) -> BundledModel:
    models = bundled_models()
    if name not in models:
        raise BundledModelError(f"no bundled model {name!r}; booksegm weights lists them ({sorted(models) or 'none'})")
    return models[name]


def model_file(ckpt_path: str | Path | None) -> Path:
    """The file a command loads: ``ckpt_path`` itself, the bundled model it names (``books``), or the
    default bundled model when it is unset (said in one line)."""
    if ckpt_path is None or is_bundled(str(ckpt_path)):
        model = bundled_model(DEFAULT_MODEL if ckpt_path is None else str(ckpt_path))
        if ckpt_path is None:
            log.info("no ckpt_path given: using the bundled %r model (booksegm weights describes it)", model.name)
        return model.weights
    return Path(ckpt_path).expanduser()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
