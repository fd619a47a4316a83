"""Pushing each stage's artifact to its own Hub repo, with a card that links the repos it came from.

`lmforge run recipes/demo --push_to_hub --hub_namespace ME` calls `push_stage` after every stage: the
web text goes to the dataset repo ME/demo-data, the tokenizer to ME/demo-tokenizer, the base model to
ME/demo-pretrain, and so on. Each card names the repos and the exact revisions (commit ids) of the
stage's parents, so the chain from web data to chat model can be followed link by link. The pushed
revisions are kept in `<run_dir>/.hub/lineage.json`. The token is read by huggingface_hub from
HF_TOKEN or the login cache and never printed.
"""

from pathlib import Path

from huggingface_hub import DatasetCard, HfApi, ModelCard

from lmforge.lib.cards import with_quick_start
from lmforge.lib.files import read_json, write_json
from lmforge.lib.stages import STAGES, pushed_parents


# What each pushed stage's artifact is made from: the nearest pushed stages upstream of it in the registry.
PARENTS = {name: pushed_parents(name) for name, stage in STAGES.items() if stage.repo_type}
# Working files that are not part of an artifact: checkpoints, datatrove's logs and intermediate files.
IGNORE = ["checkpoint-*", "checkpoint-*/**", "logs/**", "work/**", "removed/**", ".*", "**/.*"]


def lineage_path(run_dir: Path) -> Path:
    return run_dir / ".hub" / "lineage.json"


def push_stage(stage: str, folder: Path, namespace: str, run_dir: Path, api: HfApi | None = None) -> dict | None:
    """Push `folder` to `<namespace>/<run>-<stage>` with a lineage card; return the repo and revision."""
    if stage not in PARENTS:
        return None
    api = api or HfApi()
    lineage = read_json(lineage_path(run_dir)) if lineage_path(run_dir).is_file() else {}
    repo_type = STAGES[stage].repo_type
    repo_id = f"{namespace}/{run_dir.name}-{stage}"
    api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, private=True)
    parents = {name: lineage[name] for name in PARENTS[stage] if name in lineage}
    card = lineage_card(stage, folder, repo_type, parents, repo_id)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=str(folder),
        ignore_patterns=IGNORE,
        commit_message=f"lmforge {stage}",
    )
    card_commit = api.upload_file(
        path_or_fileobj=str(card).encode(),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message="lmforge lineage card",
    )
    lineage[stage] = {
        "repo_id": repo_id,
        "repo_type": repo_type,
        "revision": card_commit.oid,
        "url": url_of(api, repo_id, repo_type),
        "artifact_revision": commit.oid,
    }
    write_json(lineage_path(run_dir), lineage)
    return lineage[stage]


def url_of(api: HfApi, repo_id: str, repo_type: str) -> str:
    return f"{api.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def lineage_card(stage: str, folder: Path, repo_type: str, parents: dict, repo_id: str) -> ModelCard | DatasetCard:
    """The stage's own card (a trainer's model card, if it wrote one) with the lineage put in front, its quick start
    loading the repo it is pushed to."""
    card_class = DatasetCard if repo_type == "dataset" else ModelCard
    existing = folder / "README.md"
    card = card_class(existing.read_text()) if existing.is_file() else card_class("---\n---\n")
    card.data["tags"] = sorted(set(card.data.get("tags") or []) | {"lmforge", f"lmforge-{stage}"})
    models = [p["repo_id"] for p in parents.values() if p["repo_type"] == "model"]
    datasets = [p["repo_id"] for p in parents.values() if p["repo_type"] == "dataset"]
    if models and repo_type == "model":
        card.data["base_model"] = models[0] if len(models) == 1 else models
    if datasets:
        card.data["datasets"] = datasets
    lines = [f"## Lineage\n\nMade by `lmforge {stage}`"]
    if parents:
        lines[0] += " from:\n"
        lines += [
            f"- {name}: [{p['repo_id']}]({p['url']}) at revision `{p['revision']}`" for name, p in parents.items()
        ]
    else:
        lines[0] += " from the raw web crawl named in its recipe."
    card.text = "\n".join(lines) + "\n\n" + with_quick_start(card.text, repo_id)
    return card
