"""``python -m booksegm``: the same as the ``booksegm`` command (booksegm/cli/main.py)."""

if __name__ == "__main__":
    from booksegm.cli.main import main

    raise SystemExit(main())
