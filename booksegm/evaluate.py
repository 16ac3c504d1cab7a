"""``python -m booksegm.evaluate``: the same as ``booksegm evaluate`` (booksegm/cli/evaluate.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.evaluate`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.evaluate", run_name="__main__", alter_sys=True)
