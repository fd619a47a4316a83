"""The writing page of `lmforge label` (`page: write`): people write the assistant's reply to a prompt, most often by
editing the current model's draft, and their replies export as SFT conversations and as preference pairs.

Prompts come from `prompts` (SFT-style sources, lmforge.lib.conversations: a conversation's final assistant turn is
dropped) or, without it, from the rollouts dataset's `prompt` column. Each prompt's draft is generated once, greedily,
with the model's own chat template (lmforge.lib.assistant), and stored with the prompt, so a restarted page shows the
same draft and generates only the drafts it lacks. The labeler edits the draft, or presses Clear and writes their own;
they may also skip the prompt (it goes to another labeler) or flag it as one that should not be answered. Each answer
records the seconds since the prompt was shown, the edit distance from the draft and the instructions' version; it is
one transaction of the store (lmforge.lib.labeling).

Edit distance is counted in words: the words inserted, deleted or replaced in difflib's alignment of the draft and the
reply (an edit script: at least the Levenshtein distance in words). Whitespace and line breaks alone count nothing.

Export: `conversations.jsonl`, one SFT conversation (`messages`) per reply, for an `lmforge sft` source
`{path: json, data_files: .../conversations.jsonl}`; `preferences/`, the reply over the draft wherever the edit
distance is at least `min_pair_edit_words`, in the ranking export's format; `export.json` with the counts.
"""

import difflib
import json
import statistics
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from datasets import load_from_disk

from lmforge import LmforgeError
from lmforge.lib.conversations import check_conversation, load_source, normalise
from lmforge.lib.files import write_json, write_jsonl
from lmforge.lib.labeling import (
    connect,
    instructions_panel,
    release,
    render_prompt,
    reserve,
    save_pairs,
    timestamp,
    transaction,
)


SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, task TEXT, draft TEXT NOT NULL, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id INTEGER NOT NULL REFERENCES prompts(prompt_id),
    labeler TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('edited', 'written', 'skipped', 'flagged')),
    reply TEXT,             -- what the labeler submitted (edited or written), else NULL
    edit_distance INTEGER,  -- words changed from the draft
    seconds REAL NOT NULL,  -- from the prompt shown to the answer
    instructions TEXT NOT NULL,  -- the version of the instructions the page showed
    created_at TEXT NOT NULL,
    UNIQUE (prompt_id, labeler));
"""
ANSWERED = "r.status != 'skipped'"  # a skipped prompt goes to another labeler; a flagged one is done


def database(output_dir: Path) -> Path:
    return output_dir / "replies.sqlite"


# Prompts and drafts ----------------------------------------------------------------------------------------------


def load_prompts(sources: dict | None, rollouts: str, seed: int) -> list[dict]:
    """Unique prompts ({prompt: messages, task}) of the SFT-style `sources`, or of the rollouts without them."""
    if sources:
        named = [(name, source(name, spec, seed)) for name, spec in sources.items()]
    else:
        if not Path(rollouts).exists():
            raise LmforgeError(f"rollouts: {rollouts} does not exist (run `lmforge rollouts` or give `prompts`)")
        named = [("rollouts", load_from_disk(rollouts)["prompt"])]
    rows, seen = [], set()
    for name, conversations in named:
        for index, messages in enumerate(conversations):
            messages = normalise(messages)
            if not isinstance(messages, list):
                raise LmforgeError(f"prompts {name!r} row {index}: not a list of messages")
            if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
                messages = messages[:-1]  # a conversation's reply: the labeler writes their own
            # check_conversation wants a final assistant turn: give it a placeholder.
            if problem := check_conversation(messages + [{"role": "assistant", "content": "-"}]):
                raise LmforgeError(f"prompts {name!r} row {index}: {problem}")
            if json.dumps(messages) not in seen:
                seen.add(json.dumps(messages))
                rows.append({"prompt": messages, "task": name})
    if not rows:
        raise LmforgeError(f"prompts: {', '.join(sources) if sources else rollouts} gave no prompts")
    return rows


def source(name: str, spec: dict, seed: int) -> list:
    try:
        return load_source(name, dict(spec), seed)
    except StopIteration:  # datasets' json builder on a file without rows
        raise LmforgeError(f"prompts {name!r}: {spec} gave no prompts (no rows)") from None


def missing_drafts(connection, prompts: list[dict], path: Path) -> list[int]:
    """Indices of `prompts` not stored yet; fails if a stored prompt differs (the database is another source's)."""
    stored = dict(connection.execute("SELECT prompt_id, prompt FROM prompts"))
    if any(stored.get(i, json.dumps(row["prompt"])) != json.dumps(row["prompt"]) for i, row in enumerate(prompts)):
        raise LmforgeError(f"{path}: this database was filled from other prompts; use another output_dir")
    return [i for i in range(len(prompts)) if i not in stored]


def store_drafts(connection, prompts: list[dict], todo: list[int], draft: Callable[[list], str], model: str) -> None:
    """Draw (`draft(messages)`) and store each missing draft, one transaction each: a page killed while drafting keeps
    the drafts it drew."""
    started = time.time()
    for done, i in enumerate(todo, 1):
        text = draft(prompts[i]["prompt"])
        with transaction(connection):
            connection.execute(
                "INSERT INTO prompts VALUES (?, ?, ?, ?, ?)",
                (i, json.dumps(prompts[i]["prompt"]), prompts[i]["task"], text, model),
            )
        if done % 20 == 0 or done == len(todo):
            print(f"label: {done}/{len(todo)} drafts in {time.time() - started:.0f} s", flush=True)


# Answers ---------------------------------------------------------------------------------------------------------


def edit_distance(draft: str, reply: str) -> int:
    """Words inserted, deleted or replaced to turn the draft into the reply (difflib's alignment of the words)."""
    before, after = draft.split(), reply.split()
    opcodes = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")


def save_reply(
    connection, prompt_id: int, labeler: str, status: str, reply: str | None, seconds: float, instructions: str
) -> bool:
    """Store one answer (`reply` None for a skip or a flag). False when this labeler had already answered."""
    (draft,) = connection.execute("SELECT draft FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
    distance = None if reply is None else edit_distance(draft, reply)
    with transaction(connection):
        cursor = connection.execute(
            "INSERT INTO replies (prompt_id, labeler, status, reply, edit_distance, seconds, instructions, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prompt_id, labeler) DO NOTHING",
            (prompt_id, labeler, status, reply, distance, round(seconds, 1), instructions, timestamp()),
        )
        release(connection, labeler, prompt_id)
    return cursor.rowcount == 1


def next_prompt(connection, labeler: str, wanted: int, hold_seconds: float = 600, now: float | None = None):
    return reserve(connection, "replies", ANSWERED, labeler, wanted, hold_seconds, now)


# The page --------------------------------------------------------------------------------------------------------


def build_page(path: Path, instructions, wanted: int, hold_seconds: float):
    import gradio as gr  # only the page needs it: export runs without a web stack

    def show(labeler: str, message: str = ""):
        """Everything the page shows for this labeler's next prompt (or the end)."""
        with closing(connect(path, SCHEMA)) as connection:
            prompt_id = next_prompt(connection, labeler, wanted, hold_seconds)
            if prompt_id is not None:
                prompt, draft = connection.execute(
                    "SELECT prompt, draft FROM prompts WHERE prompt_id = ?", (prompt_id,)
                ).fetchone()
        if prompt_id is None:
            done = f"{message} No prompts left for **{labeler}**. Thank you!".strip()
            return [{"labeler": labeler}, done, "", "", ""]
        state = {"labeler": labeler, "prompt_id": prompt_id, "shown_at": time.time(), "cleared": False}
        status = f"{message} Labeler **{labeler}**, prompt {prompt_id}.".strip()
        return [state, status, render_prompt(json.loads(prompt)), draft, draft]

    def start(labeler):
        labeler = (labeler or "").strip()
        if not labeler:
            raise gr.Error("Enter your labeler id.")
        return show(labeler)

    def answer(state, status: str, reply: str | None):
        if "prompt_id" not in state:
            raise gr.Error("Enter your labeler id and press Start first.")
        # Each request has its own connection: Gradio runs handlers in threads, and a shared connection
        # would mix two labelers' transactions.
        with closing(connect(path, SCHEMA)) as connection:
            seconds = time.time() - state["shown_at"]
            save_reply(connection, state["prompt_id"], state["labeler"], status, reply, seconds, instructions.version)
        return show(state["labeler"], {"skipped": "Skipped.", "flagged": "Flagged."}.get(status, "Saved."))

    def submit(state, reply):
        if not (reply or "").strip():
            raise gr.Error("The reply is empty: write one, or skip the prompt.")
        return answer(state, "written" if state.get("cleared") else "edited", reply.strip())

    def clear(state):
        return {**state, "cleared": True}, ""

    with gr.Blocks(title="lmforge: write replies", analytics_enabled=False) as page:
        instructions_panel(gr, instructions)
        gr.Markdown(
            "## Write the assistant's reply\nEdit the model's draft into the reply the instructions ask for, or press "
            "**Clear and write** and write your own. **Skip** a prompt you cannot answer; **Flag** one that should "
            "not be in the data at all."
        )
        state = gr.State({})
        with gr.Row():
            labeler = gr.Textbox(label="Labeler id", elem_id="labeler", scale=3)
            start_button = gr.Button("Start", elem_id="start", scale=1)
        status = gr.Markdown(elem_id="status")
        prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="prompt")
        draft = gr.Textbox(label="The model's draft", interactive=False, lines=3, elem_id="draft")
        reply = gr.Textbox(label="Your reply", interactive=True, lines=8, elem_id="reply")
        with gr.Row():
            submit_button = gr.Button("Submit reply", variant="primary", elem_id="submit")
            clear_button = gr.Button("Clear and write", elem_id="clear")
            skip_button = gr.Button("Skip", elem_id="skip")
            flag_button = gr.Button("Flag", variant="stop", elem_id="flag")
        outputs = [state, status, prompt, draft, reply]
        start_button.click(start, [labeler], outputs)
        submit_button.click(submit, [state, reply], outputs)
        clear_button.click(clear, [state], [state, reply])
        skip_button.click(lambda state: answer(state, "skipped", None), [state], outputs)
        flag_button.click(lambda state: answer(state, "flagged", None), [state], outputs)
    return page


# Export ----------------------------------------------------------------------------------------------------------


def export(connection, output_dir: Path, min_pair_edit_words: int, test_fraction: float, seed: int) -> dict:
    rows = connection.execute(
        "SELECT r.id, r.prompt_id, r.labeler, r.status, r.reply, r.edit_distance, r.seconds, r.instructions, "
        "p.prompt, p.draft FROM replies r JOIN prompts p USING (prompt_id) ORDER BY r.id"
    ).fetchall()
    conversations, pairs = [], []
    for reply_id, prompt_id, labeler, status, reply, distance, seconds, instructions, prompt, draft in rows:
        if reply is None:
            continue
        prompt = json.loads(prompt)
        conversations.append(
            {
                "messages": prompt + [{"role": "assistant", "content": reply}],
                "prompt_id": prompt_id,
                "labeler": labeler,
                "status": status,
                "edit_distance": distance,
                "seconds": seconds,
                "instructions": instructions,
            }
        )
        if distance >= min_pair_edit_words:
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": reply}],
                    "rejected": [{"role": "assistant", "content": draft}],
                    "source": "human",
                    "labeler": labeler,
                    "prompt_id": prompt_id,
                    "reply_id": reply_id,
                    "rank_gap": 1,
                    "instructions": instructions,
                    "edit_distance": distance,
                }
            )
    if not conversations:
        raise LmforgeError(f"{database(output_dir)}: no replies to export yet")
    write_jsonl(output_dir / "conversations.jsonl", conversations)
    splits = save_pairs(pairs, output_dir, test_fraction, seed) if pairs else None

    statuses = [row[3] for row in rows]
    counts = {
        "rows": len(conversations),
        "edits": statuses.count("edited"),
        "unchanged": sum(c["edit_distance"] == 0 for c in conversations),
        "rewrites": statuses.count("written"),
        "skips": statuses.count("skipped"),
        "flags": statuses.count("flagged"),
        "pairs": len(pairs),
        "train_pairs": len(splits["train"]) if splits else 0,
        "test_pairs": len(splits["test"]) if splits else 0,
        "median_seconds_per_reply": statistics.median(c["seconds"] for c in conversations),
        "median_edit_distance": statistics.median(c["edit_distance"] for c in conversations),
        "instructions_versions": sorted({c["instructions"] for c in conversations}),
    }
    write_json(output_dir / "export.json", counts)
    print(
        f"label: {counts['rows']} conversations ({counts['edits']} edits, {counts['rewrites']} rewrites) -> "
        f"{output_dir / 'conversations.jsonl'}; {counts['pairs']} pairs -> {output_dir / 'preferences'}"
    )
    return counts
