"""The benchmark module runs end to end and prints every figure (a smoke test, not a timing)."""

from __future__ import annotations

import re

from booksegm.bench.__main__ import main


def test_bench_prints_synth_data_train_and_predict_figures(capsys):
    assert main(["--steps", "2", "--warmup-steps", "1", "--num-images", "4", "--image-size", "64",
                 "--batch-size", "2", "--backbone", "resnet18", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^synth .* [\d.]+ images/s", out, re.M)
    assert re.search(r"^data .* [\d.]+ images/s", out, re.M)
    assert re.search(r"^train +booksegm \(Lightning\) +[\d.]+ s/step", out, re.M)
    assert re.search(r"^train +plain torchvision loop +[\d.]+ s/step", out, re.M)
    assert re.search(r"^predict +booksegm [\d.]+ images/s, plain torchvision [\d.]+ images/s", out, re.M)
