"""The keys TRL's trainers log their figures under (`trainer.state.log_history`, `trainer_state.json`), in one place
for the RL stages' results, the watch and the report. TRL 1.12 names them per trainer:
    GRPOTrainer  reward, kl
    PPOTrainer   objective/scores (mean reward-model score), objective/rlhf_reward (score minus KL penalty),
                 objective/kl, objective/entropy, loss/policy_avg
    DPOTrainer   rewards/margins (chosen minus rejected), rewards/accuracies; `eval_` in front after evaluate()
"""

GRPO_REWARD, GRPO_KL = "reward", "kl"
PPO_SCORE, PPO_RLHF_REWARD, PPO_KL = "objective/scores", "objective/rlhf_reward", "objective/kl"
PPO_ENTROPY, PPO_POLICY_LOSS = "objective/entropy", "loss/policy_avg"
DPO_MARGIN, DPO_ACCURACY = "rewards/margins", "rewards/accuracies"

# What the report plots and the watch reads, whichever trainer wrote the log: the first key present wins.
TRAIN_LOSS = ("loss", PPO_POLICY_LOSS)
REWARD = (GRPO_REWARD, PPO_RLHF_REWARD, PPO_SCORE, DPO_MARGIN)
KL = (GRPO_KL, PPO_KL)  # DPO logs none
TOKENS = ("num_input_tokens_seen", "num_tokens")


def logged(history: list[dict], key: str, steps: int = 3) -> tuple[float | None, float | None]:
    """Mean of a logged metric over the first and over the last `steps` log entries that have it."""
    values = [entry[key] for entry in history if key in entry]
    if not values:
        return None, None
    return sum(values[:steps]) / len(values[:steps]), sum(values[-steps:]) / len(values[-steps:])
