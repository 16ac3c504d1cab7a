"""The ``booksegm`` command: ``booksegm COMMAND ARGS...`` runs ``python -m booksegm.cli.MODULE ARGS...``.

    booksegm train +experiment=anchors_16_256      # Hydra: overrides, --multirun, --cfg job, --help
    booksegm data check via_region_data.json
    booksegm --help                                # the commands, one line each

A command runs its module as ``python -m`` does (runpy): the module is ``__main__`` and
``sys.argv[0]`` its file, so Hydra names the job and the run folder as before, and Lightning's
DDP launcher starts the other GPUs' processes as ``python -m booksegm.cli.MODULE ARGS...``.
"""

from __future__ import annotations

import runpy
import sys

from booksegm.errors import UserError, cli_errors

COMMANDS = {  # command: (module, one line of help)
    "train": ("booksegm.cli.train", "train Mask R-CNN (Hydra: key=value overrides, +experiment=NAME, --multirun)"),
    "evaluate": ("booksegm.cli.evaluate", "COCO mAP, PR curves and per-image scores of a checkpoint (Hydra)"),
    "predict": ("booksegm.cli.predict", "segment books in photos, folders and videos: overlays, masks, COCO JSON "
                                        "(Hydra)"),
    "inventory": ("booksegm.cli.inventory", "books of shelf photos in rows, left to right: CSV/JSON, upright "
                                            "crops, numbered overlays (Hydra)"),
    "serve": ("booksegm.cli.serve", "inventory on a local web page: drop shelf photos, see the numbered books, "
                                    "download crops, CSV, VIA project (Hydra)"),
    "export": ("booksegm.cli.export", "export a checkpoint as a torchvision state dict, TorchScript or ONNX (Hydra)"),
    "data": ("booksegm.cli.data", "annotation tools: synth (render the synthetic set), check, convert, suggest "
                                  "(the photos to label next)"),
    "anchors": ("booksegm.cli.anchors", "suggest anchor sizes and ratios from the boxes of an annotation file"),
    "bench": ("booksegm.bench", "speed against a plain torchvision loop; bench accuracy|curves: recipes side by "
                                "side; bench inventory: shelf order; bench suggest: labelling suggested vs random "
                                "photos"),
    "sweep-report": ("booksegm.cli.sweep_report", "rank the jobs of a Hydra multirun by validation mask AP"),
    "weights": ("booksegm.cli.weights", "the models bundled in the package: recipe, data, figures, sha256"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "\n".join([
        "usage: booksegm COMMAND ARGS...", "", "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()), "",
        "`booksegm COMMAND --help` gives a command's own help; `python -m booksegm.cli.MODULE ARGS...` works too.",
    ])


@cli_errors(exit_code=2)  # an unknown command: one line, exit 2 (as argparse's)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, *rest = argv
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r} (booksegm --help lists them)")
    sys.argv = [sys.argv[0], *rest]  # run_module puts the module's file in sys.argv[0]
    runpy.run_module(COMMANDS[command][0], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
