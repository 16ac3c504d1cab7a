"""``python -m booksegm.predict``: the same as ``booksegm predict`` (booksegm/cli/predict.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.predict`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.predict", run_name="__main__", alter_sys=True)
