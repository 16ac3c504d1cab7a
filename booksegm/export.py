"""``python -m booksegm.export``: the same as ``booksegm export`` (booksegm/cli/export.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.export`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.export", run_name="__main__", alter_sys=True)
