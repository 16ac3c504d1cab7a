"""``booksegm weights``: the models bundled in the package, with how each was made and its sha256.

    booksegm weights            # name, recipe, data, figures, sha256 (checked against the file)
"""

from __future__ import annotations

import argparse
import sys

from booksegm.errors import cli_errors
from booksegm.model.bundled import DEFAULT_MODEL, bundled_models


def describe(models) -> str:
    if not models:
        return "no bundled models in this install"
    lines = []
    for model in models.values():
        card = model.card
        default = " (the default: used when no ckpt_path is given)" if model.name == DEFAULT_MODEL else ""
        lines += [f"{model.name}{default}", f"  file     {model.weights} ({model.weights.stat().st_size / 1e6:.1f} MB)",
                  f"  sha256   {model.verify()} (matches its card)"]
        lines += [f"  {key:<8} {card[key]}" for key in ("model", "recipe", "data", "measured") if key in card]
        lines += [f"  {name}: {value}" for name, value in card.get("figures", {}).items()]
        lines.append(f"  use      model.weights={model.name} (fine-tune) | ckpt_path={model.name} (evaluate, predict, export)")
    return "\n".join(lines)


@cli_errors()
def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="booksegm weights", description=__doc__.splitlines()[0]).parse_args(argv)
    print(describe(bundled_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
