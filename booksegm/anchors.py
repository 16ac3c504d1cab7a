"""``python -m booksegm.anchors``: the same as ``booksegm anchors`` (booksegm/cli/anchors.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.anchors`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.anchors", run_name="__main__", alter_sys=True)
