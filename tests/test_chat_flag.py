"""`lmforge chat` does not talk to a model the RL watch flagged: a run it stopped with no healthy checkpoint to fall
back on left a degenerate model (the closing chat of `make demo` says so instead of printing its text)."""

from lmforge import chat
from lmforge.lib.assistant import ChatConfig
from lmforge.lib.files import write_json


def test_a_flagged_model_is_not_chatted_with(tmp_path, capsys):
    alarm = {"step": 12, "metric": "kl", "value": 25.0, "bound": 20.0}
    results = {"watch": {"stopped": True, "alarms": [alarm]}, "final_model": "last step"}
    write_json(tmp_path / "ppo_results.json", results)
    assert chat.main(ChatConfig(model_name_or_path=str(tmp_path)), lines=["Who are you?"]) == []
    out = capsys.readouterr().out
    assert out.startswith(f"Not chatting with {tmp_path}: the watch stopped its training run") and "25.0" in out


def test_a_model_restored_to_its_last_healthy_checkpoint_is_not_flagged(tmp_path):
    write_json(
        tmp_path / "ppo_results.json",
        {"watch": {"stopped": True, "alarms": [{"step": 12}]}, "final_model": str(tmp_path / "checkpoint-10")},
    )
    assert chat.watch_flag(str(tmp_path)) is None
    write_json(tmp_path / "ppo_results.json", {"watch": {"stopped": False, "alarms": []}, "final_model": "last step"})
    assert chat.watch_flag(str(tmp_path)) is None
