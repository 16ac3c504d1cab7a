"""``booksegm weights``: the models bundled in the package, with how each was made and its sha256.

    booksegm weights                                    # name, recipe, data, figures, sha256 (checked)
    booksegm weights bundle CKPT --name books --recipe ... --data ... --figure "mask AP=0.3" --measured ...
        # exports CKPT as booksegm/bundled/NAME.pth + NAME.json with that card (docs/model_card.md);
        # --input-size N: photos fitted into N px squares instead of the run's validation size
        # --mask-threshold T: masks cut at probability T instead of the run's model.mask_threshold
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from booksegm.cli.export import write_state_dict
from booksegm.config import ConfigError
from booksegm.data.resize import ResizeConfig
from booksegm.errors import cli_errors
from booksegm.inference import SPEC_SECTION, load_model, with_mask_threshold
from booksegm.model.build import check_mask_threshold
from booksegm.model.bundled import CARD_SECTION, DEFAULT_MODEL, bundled_models, bundled_path, sha256_of


def describe(models) -> str:
    if not models:
        return "no bundled models in this install"
    lines = []
    for model in models.values():
        card = model.card
        default = " (the default: used when no ckpt_path is given)" if model.name == DEFAULT_MODEL else ""
        lines += [f"{model.name}{default}", f"  file     {model.weights} ({model.weights.stat().st_size / 1e6:.1f} MB)",
                  f"  sha256   {model.verify()} (matches its card)"]
        lines += [f"  {key:<8} {card[key]}" for key in ("recipe", "data", "measured") if key in card]
        lines += [f"  {name}: {value}" for name, value in card.get("figures", {}).items()]
        lines.append(f"  use      model.weights={model.name} (fine-tune) | ckpt_path={model.name} (evaluate, predict, export)")
    return "\n".join(lines)


def bundle(checkpoint: str, name: str, card: dict, input_size: int | None = None,
           mask_threshold: float | None = None) -> str:
    """Export ``checkpoint`` into the package as NAME.pth + NAME.json carrying ``card`` and the sha256;
    with ``input_size``, the model fits photos into squares of that side instead of its run's validation size;
    with ``mask_threshold``, it cuts masks there (``model.mask_threshold``): how it runs, not what it learnt."""
    loaded = load_model(checkpoint)
    if input_size is not None:
        if input_size < 32:
            raise ConfigError(f"--input-size must be at least 32 px, got {input_size}")
        loaded = dataclasses.replace(loaded, resize=ResizeConfig("square", input_size, input_size))
    check_mask_threshold(mask_threshold, "--mask-threshold")
    loaded = with_mask_threshold(loaded, mask_threshold)
    weights = bundled_path(name)
    write_state_dict(loaded, weights)
    spec_file = weights.with_suffix(".json")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    spec[SPEC_SECTION]["model"]["weights"] = "none"  # the run's initial weights: a path on the machine that trained it
    spec[CARD_SECTION] = {**card, "sha256": sha256_of(weights)}
    spec_file.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return spec[CARD_SECTION]["sha256"]


def figure(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--figure takes NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


@cli_errors()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="booksegm weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    packer = commands.add_parser("bundle", help="export a checkpoint into the package with its card")
    packer.add_argument("checkpoint", help="a Lightning .ckpt (or an exported .pth with its .json)")
    packer.add_argument("--name", default=DEFAULT_MODEL, help="the bundled model's name (default: books)")
    packer.add_argument("--recipe", required=True, help="the commands that trained it")
    packer.add_argument("--data", required=True, help="what it was trained on, with licences")
    packer.add_argument("--measured", required=True, help="when and on what machine the figures were measured")
    packer.add_argument("--figure", type=figure, action="append", default=[], help="NAME=VALUE, repeatable")
    packer.add_argument("--input-size", type=int, default=None,
                        help="fit photos into squares of this side, px (default: as the run validated)")
    packer.add_argument("--mask-threshold", type=float, default=None,
                        help="cut masks at this probability (default: the run's model.mask_threshold)")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        card = {"recipe": args.recipe, "data": args.data, "measured": args.measured, "figures": dict(args.figure)}
        digest = bundle(args.checkpoint, args.name, card, args.input_size, args.mask_threshold)
        print(f"bundled {args.name}: sha256 {digest}")
    else:
        print(describe(bundled_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
