"""``python -m booksegm.train``: the same as ``booksegm train`` (booksegm/cli/train.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.train`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.train", run_name="__main__", alter_sys=True)
