"""Model cards: which Hub model a local folder came from, and the card of a merged model.

A card's `base_model` must be a Hub id. A model given as a local folder can still name one: a folder in the
Hub cache (`models--ORG--NAME/snapshots/REV`) is that repo, a config saved from a Hub model records its id
as `_name_or_path`, and a folder lmforge wrote (merge, SFT) carries its base in its own card.
"""

import json
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id


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
    cached = re.search(r"models--([^/]+)--([^/]+)/snapshots/", folder.as_posix())
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
