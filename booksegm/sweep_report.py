"""``python -m booksegm.sweep_report``: the same as ``booksegm sweep-report`` (booksegm/cli/sweep_report.py)."""

import runpy

if __name__ == "__main__":  # as `python -m booksegm.cli.sweep_report`: Hydra and Lightning see that module as __main__
    runpy.run_module("booksegm.cli.sweep_report", run_name="__main__", alter_sys=True)
