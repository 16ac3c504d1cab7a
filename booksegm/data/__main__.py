"""``python -m booksegm.data``: the same as ``booksegm data`` (booksegm/cli/data.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.data`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.data", run_name="__main__", alter_sys=True)
