"""A stage run by hand shows what it does, without the notices of libraries that a user cannot act on
(lib.notices, installed on import of lmforge), and keeps the warnings that matter."""

import os
import subprocess
import sys

from tiny import one_step_sft_args, save_tiny_model


TEXTS = [f"the cat sat on mat number {i} and the dog sat on log number {i}." * 4 for i in range(60)]


def test_sft_by_hand_shows_no_notice_a_user_cannot_act_on(tmp_path):
    model = save_tiny_model(tmp_path / "model", TEXTS, vocab_size=300)
    argv = one_step_sft_args(model, tmp_path / "sft")
    result = subprocess.run(
        [sys.executable, "-m", "lmforge.sft", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "precision: fp32" in output and "sft: global batch" in output  # the stage's own lines stay
    assert "Setting accelerator to CPU" not in output  # DeepSpeed's, on every machine without a GPU
