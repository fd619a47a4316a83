"""Model cards: which Hub model a local folder came from, the card of a merged model, and TRL's cards of trained
models made right (RightCard).

A card's `base_model` must be a Hub id. A model given as a local folder can still name one: a folder in the
Hub cache (`models--ORG--NAME/snapshots/REV`) is that repo, a config saved from a Hub model records its id
as `_name_or_path`, and a folder lmforge wrote (merge, SFT) carries its base in its own card.
"""

import json
import os
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id


HUB_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")  # a Hub model's folder in the Hub cache


def is_hub_id(name: str | None) -> bool:
    if not name or Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_id_of(name_or_path: str) -> str | None:
    """The Hub id `name_or_path` is or came from, or None (a model made here, never on the Hub)."""
    if is_hub_id(name_or_path):
        return name_or_path
    folder = Path(name_or_path).resolve()
    cached = HUB_CACHE.search(folder.as_posix())
    if cached:
        return f"{cached[1]}/{cached[2]}"
    config = folder / "config.json"
    if config.is_file():
        recorded = json.loads(config.read_text()).get("_name_or_path")
        if is_hub_id(recorded):
            return recorded
    # Only a card lmforge wrote names this folder's own base: a Hub model's card names the model *it* came from.
    readme = folder / "README.md"
    if readme.is_file():
        card = ModelCard.load(readme)
        base = card.data.get("base_model")
        if "lmforge" in (card.data.get("tags") or []) and isinstance(base, str) and is_hub_id(base):
            return base
    return None


def merged_card(base: str, adapter: str, dtype: str) -> ModelCard:
    """The card of a LoRA adapter folded into its base: both named, the base linked when it has a Hub id."""
    # An adapter folder's own card names its base, so only an adapter given by Hub id is linked as one.
    base_id, adapter_id = hub_id_of(base), adapter if is_hub_id(adapter) else None

    def link(path, hub_id):
        return f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"the local folder `{path}`"

    data = ModelCardData(base_model=base_id, tags=["lmforge", "merge", "lora"], library_name="transformers")
    text = (
        f"# Merged model\n\nThe LoRA adapter {link(adapter, adapter_id)} folded into its base model "
        f"{link(base, base_id)} with `lmforge merge`, saved in {dtype}. It loads with transformers alone "
        "(no peft), with the adapter's tokenizer and generation config.\n"
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def licence_of(base: str) -> str | None:
    """The licence of the base model, from its card's metadata: a local folder's README.md, else the Hub's card
    (None offline, or when the card names none)."""
    readme = Path(base) / "README.md"
    try:
        card = (
            ModelCard.load(readme)
            if readme.is_file()
            else ModelCard.load(hub_id_of(base))
            if hub_id_of(base)
            else None
        )
    except Exception:  # offline, a private or missing repo: the licence is then unknown, not an error
        return None
    return card.data.get("license") if card else None


def datasets_of(sources: str | dict | None) -> dict[str, str | None]:
    """The training data a card names, name -> Hub id (None: not on the Hub): one source (a path, a Hub id, or a
    mapping with `path`) or a mapping of names to sources or counts (SFT's datasets, the RL stages' tasks)."""
    if not sources:
        return {}
    if isinstance(sources, str) and sources.lstrip().startswith("{"):
        sources = json.loads(sources)  # a source given on the command line as JSON (lib.sources.spec_of)
    if isinstance(sources, str) or "path" in sources:
        path = sources if isinstance(sources, str) else sources["path"]
        return {path: path if is_hub_id(path) else None}
    return {
        name: spec["path"] if isinstance(spec, dict) and is_hub_id(spec.get("path")) else None
        for name, spec in sources.items()
    }


def with_quick_start(text: str, model_ref: str) -> str:
    """A card's text with its quick start loading `model_ref` (TRL's `pipeline(..., model="None")` before a push)."""
    return re.sub(r'(pipeline\([^)]*?model=")[^"]*"', lambda match: f'{match[1]}{model_ref}"', text)


def training_card(path: str | Path, base: str, datasets: dict[str, str | None], model_ref: str) -> None:
    """TRL's card of a trained model (its README.md at `path`), made right: the base model linked when it has a Hub id
    and named as a folder when not; each dataset its own entry, linked only when a Hub id (`datasets`: name -> Hub id
    or None); the base's licence, not TRL's placeholder `licence: license`; a quick start loading `model_ref`, the
    pushed repo or the local folder, where TRL writes model="None" for a model never pushed."""
    card = ModelCard.load(path)
    data = {key: value for key, value in card.data.to_dict().items() if key != "licence"}
    base_id = hub_id_of(base)
    data.update(base_model=base_id, datasets=[d for d in datasets.values() if d] or None, license=licence_of(base))
    card.data = ModelCardData(**{key: value for key, value in data.items() if value is not None})
    names = [
        f"[{hub}](https://huggingface.co/datasets/{hub})" if hub else f"`{name}`" for name, hub in datasets.items()
    ]
    hub_link = f"[{base_id}](https://huggingface.co/{base_id})"
    if is_hub_id(base) or HUB_CACHE.search(Path(base).resolve().as_posix()):
        base_link = hub_link
    else:  # a local folder, made from a Hub model or not
        base_link = f"the local model `{base}`" + (f" (made from {hub_link})" if base_id else "")
    trained_on = f" on {', '.join(names)}" if names else ""
    text = re.sub(
        r"^This model is a fine-tuned version of .*$",
        lambda _: f"Fine-tuned from {base_link}{trained_on}.",
        card.text,
        count=1,
        flags=re.M,
    )
    card.text = with_quick_start(text, model_ref)
    card.save(path)


class RightCard:
    """Put before a TRL trainer class (`class Trainer(RightCard, DPOTrainer)`): the card TRL writes into output_dir, at
    each checkpoint and at the end, is made right by `training_card`. Takes `base_model` (the model trained from,
    a Hub id or a folder) and `datasets` (name -> Hub id or None) besides the trainer's own arguments."""

    def __init__(self, *args, base_model: str, datasets: dict[str, str | None], **kwargs):
        super().__init__(*args, **kwargs)
        self.card_base, self.card_datasets = base_model, datasets

    def create_model_card(self, *args, **kwargs):
        super().create_model_card(*args, **kwargs)
        path = os.path.join(self.args.output_dir, "README.md")
        if self.is_world_process_zero() and os.path.exists(path):
            model_ref = self.hub_model_id if self.args.push_to_hub else os.path.abspath(self.args.output_dir)
            training_card(path, self.card_base, self.card_datasets, model_ref)
