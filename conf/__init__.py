# Makes conf/ the package booksegm.conf (pyproject.toml maps it), so every entry point loads its
# configs as pkg://booksegm.conf: from the checkout, an editable install and a wheel alike.
