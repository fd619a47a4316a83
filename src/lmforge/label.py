"""Labels: people rank rollouts or write replies on a local page, or automatic judges rank; then export.

    lmforge label --config recipes/demo/label_page.yaml            # the ranking page on http://127.0.0.1:7860
    lmforge label --config recipes/demo/label_page.yaml --export   # people's rankings -> preference pairs
    lmforge label --config recipes/demo/label.yaml                 # the demo: judges rank, then export
    lmforge label --config recipes/demo/write_page.yaml            # the writing page (page: write)
    lmforge label --config recipes/demo/write_page.yaml --export   # replies -> SFT conversations and pairs

Both pages show the labeling instructions (`instructions`, a Markdown file) in a side panel, and every answer records
their version (lmforge.lib.labeling). The writing page, where people edit the model's drafts or write their own
replies, and its export are lmforge.lib.writing; the rest of this docstring is the ranking page's.

The rollouts to rank are the rollouts stage's dataset, or a user's own from any source lmforge.lib.sources reads (a
file, folder, glob or Hub id) with a `prompt` (text or messages) and its `responses` (two or more texts) per row.
The page (Gradio) asks for a labeler id, then shows a prompt and its K responses in a random order of
that labeler's own (A, B, ...). The labeler gives each response a rank (1 = best) and may tick responses
as harmful, or skips the prompt. Each answer is one SQLite transaction, committed before the next
prompt is shown. The database (`rankings.sqlite`, WAL mode, so several labelers' pages write at once)
keeps one row per labeler and prompt: a labeler never sees a prompt twice, and a restarted page shows
only prompts with fewer than `rankings_per_prompt` rankings. A prompt shown to a labeler is reserved for them
for `reservation_minutes` (a row in `reservations`, taken in the same transaction that chooses the prompt), so
labelers working at once get different prompts; an answer after the reservation expired is still kept.
With `judges` set, the judges of lmforge.lib.judges rank every prompt instead, as labeler `judge`, in the same table.

Export turns each ranking into pairs (chosen ranked above rejected): all K(K-1)/2 ordered pairs, except
that a response flagged harmful ranks below every unflagged one whatever its given rank, and no pair is
made between two flagged responses, two identical texts, or two responses a judge scored equal. A skip
gives no pairs. Pairs are in TRL's conversational preference format (prompt = messages, chosen/rejected
= [assistant message]) with `source` (human or judge), `labeler`, `prompt_id`, `rank_gap` and `instructions` columns,
split into train/test by prompt, so test prompts are unseen in training.

Outputs under `output_dir`: `rankings.sqlite`, `preferences/` (a DatasetDict, written atomically),
`agreement.json` (pairwise agreement between rankings of the same prompt), and `export.json` (counts).
"""

import glob
import json
import random
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from pathlib import Path

from datasets import Dataset

from lmforge import LmforgeError
from lmforge.lib import judges, labeling, writing
from lmforge.lib.assistant import ChatConfig, generate_reply
from lmforge.lib.configs import from_json, parse
from lmforge.lib.files import recover_dir, write_json
from lmforge.lib.labeling import load_instructions, release, reserve, save_pairs, timestamp, transaction
from lmforge.lib.loading import is_local
from lmforge.lib.models import load_for_generation
from lmforge.lib.sampling import sampling_field
from lmforge.lib.sources import load_checked, named_sources, spec_of


SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, responses TEXT NOT NULL, finished TEXT NOT NULL,
    task TEXT, reference TEXT);
CREATE TABLE IF NOT EXISTS rankings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id INTEGER NOT NULL REFERENCES prompts(prompt_id),
    labeler TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('human', 'judge')),
    status TEXT NOT NULL CHECK (status IN ('ranked', 'skipped')),
    ranking TEXT,           -- JSON: response indices, best first
    flagged TEXT NOT NULL,  -- JSON: indices of responses flagged as harmful
    scores TEXT,            -- JSON: a judge's score per response
    created_at TEXT NOT NULL,
    instructions TEXT,      -- the version of the labeling instructions the page showed (NULL for a judge)
    UNIQUE (prompt_id, labeler));
"""
RANKED = "r.status = 'ranked' AND r.source = 'human'"  # what counts towards rankings_per_prompt
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class LabelConfig:
    page: str = field(
        default="rank",
        metadata={"help": "rank: people rank rollouts; write: people edit the model's drafts or write replies."},
    )
    instructions: str | None = field(
        default=None, metadata={"help": "Markdown file of labeling instructions, shown on the page."}
    )
    rollouts: str = field(
        default="runs/demo/rollouts/dataset",
        metadata={"help": "The rollouts stage's dataset, or a source of prompt and responses rows (lib.sources)."},
    )
    output_dir: str = "runs/demo/labels"
    rankings_per_prompt: int = field(default=1, metadata={"help": "People's rankings wanted per prompt."})
    reservation_minutes: float = field(
        default=10, metadata={"help": "A prompt shown to a labeler is held for them this long, then given out again."}
    )
    judges: dict | str | None = field(
        default=None, metadata={"help": "Judge name -> weight: rank with lmforge.lib.judges instead of the page."}
    )
    export: bool = field(default=False, metadata={"help": "Turn the rankings into preference pairs."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of prompts whose pairs are held out."})
    seed: int = field(default=0, metadata={"help": "Seed of the train/test split of prompts."})
    host: str = field(default="127.0.0.1", metadata={"help": "The page listens here (loopback: this machine only)."})
    port: int = 7860
    # The writing page (page: write)
    prompts: dict | str | None = field(
        default=None,
        metadata={"help": "Name -> source, as SFT's datasets (last assistant turn dropped); none: the rollouts."},
    )
    model: str = field(default="runs/demo/sft", metadata={"help": "The model whose drafts the labelers edit."})
    max_new_tokens: int = sampling_field("max_new_tokens", 128)
    replies_per_prompt: int = field(default=1, metadata={"help": "People's replies wanted per prompt."})
    min_pair_edit_words: int = field(
        default=2, metadata={"help": "A reply edited by at least this many words makes a pair: reply over draft."}
    )

    def __post_init__(self):
        if self.page not in ("rank", "write"):
            raise LmforgeError(f"page: {self.page!r} is not one of ['rank', 'write']")
        self.prompts = named_sources(self.prompts, "prompts")
        self.judges = from_json(self.judges, "judges")
        if self.judges is not None:
            self.judges = judges.check_weights(self.judges)
        if min(self.rankings_per_prompt, self.replies_per_prompt, self.min_pair_edit_words) < 1:
            raise LmforgeError("rankings_per_prompt, replies_per_prompt and min_pair_edit_words must be at least 1")
        if not 0 <= self.test_fraction < 1 or not self.reservation_minutes > 0:
            raise LmforgeError("0 <= test_fraction < 1 and reservation_minutes > 0 are required")


CONFIGS = (LabelConfig,)


# Storage -------------------------------------------------------------------------------------------------


def connect(path: Path):
    """The rankings' store (lmforge.lib.labeling), with the instructions column that earlier databases lack."""
    connection = labeling.connect(path, SCHEMA)
    labeling.add_column(connection, "rankings", "instructions", "TEXT")
    return connection


def load_rollouts(source: str) -> Dataset:
    """The rollouts to rank: the rollouts stage's dataset, or any source lib.sources reads with a `prompt` (text or
    messages) and its `responses` (two or more texts) per row; what a user's rows lack is filled in (prompt_id: the
    row's number, task: rollouts, reference: none, finished: every response)."""
    path = spec_of(source)["path"]
    if is_local(path) and not glob.has_magic(path) and not Path(path).exists():
        raise LmforgeError(f"rollouts: {source} does not exist (run `lmforge rollouts` first)")
    rows = load_checked(source, "rollouts", ["rollouts"]).train

    def complete(row: dict, index: int) -> dict:
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        return {
            "prompt_id": row.get("prompt_id", index),
            "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
            "task": row.get("task") or "rollouts",
            "reference": row.get("reference"),
            "finished": row.get("finished") or [True] * len(row["responses"]),
        }

    return rows.map(complete, with_indices=True)


def store_prompts(connection, rollouts: Dataset, path: Path) -> None:
    """Copy the rollouts into the database, so rankings always refer to the responses that were shown."""
    rows = [
        (
            r["prompt_id"],
            json.dumps(r["prompt"]),
            json.dumps(r["responses"]),
            json.dumps(r["finished"]),
            r["task"],
            r["reference"],
        )
        for r in rollouts
    ]
    with transaction(connection):
        connection.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?, ?)", rows)
    stored = {row[0]: row[1:3] for row in connection.execute("SELECT prompt_id, prompt, responses FROM prompts")}
    if any(stored[r[0]] != r[1:3] for r in rows):
        raise LmforgeError(f"{path}: this database was filled from other rollouts; use another output_dir")


def save_ranking(
    connection,
    prompt_id: int,
    labeler: str,
    source: str,
    ranking: list | None,
    flagged: list,
    scores: list | None = None,
    instructions: str | None = None,
) -> bool:
    """Store one ranking (None: a skip), given under the `instructions` version. False when this labeler had
    already answered this prompt."""
    with transaction(connection):
        cursor = connection.execute(
            "INSERT INTO rankings (prompt_id, labeler, source, status, ranking, flagged, scores, created_at, "
            "instructions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (prompt_id, labeler) DO NOTHING",
            (
                prompt_id,
                labeler,
                source,
                "skipped" if ranking is None else "ranked",
                None if ranking is None else json.dumps(ranking),
                json.dumps(sorted(flagged)),
                None if scores is None else json.dumps(scores),
                timestamp(),
                instructions,
            ),
        )
        release(connection, labeler, prompt_id)
    return cursor.rowcount == 1


def next_prompt(
    connection, labeler: str, rankings_per_prompt: int, hold_seconds: float = 600, now: float | None = None
) -> int | None:
    """Reserve for `labeler` the next prompt that still needs people's rankings (lmforge.lib.labeling.reserve)."""
    return reserve(connection, "rankings", RANKED, labeler, rankings_per_prompt, hold_seconds, now)


def judge_all(connection, rollouts: Dataset, weights: dict) -> int:
    """Rank every prompt the judge has not ranked yet; returns how many it ranked now."""
    ranked = 0
    for row in rollouts:
        ranking, scores = judges.rank(row, weights)
        ranked += save_ranking(connection, row["prompt_id"], "judge", "judge", ranking, [], scores)
    return ranked


# The page ------------------------------------------------------------------------------------------------


def shown_order(labeler: str, prompt_id: int, k: int) -> list[int]:
    """The response index behind each letter: random, but the same for a labeler who reloads the page."""
    order = list(range(k))
    random.Random(f"{labeler}/{prompt_id}").shuffle(order)
    return order


def ranking_from_page(ranks: list, flags: list, order: list[int]) -> tuple[list[int], list[int]]:
    """Response indices best first and flagged indices, from the rank given to each letter."""
    k = len(order)
    if sorted(str(r) for r in ranks) != sorted(str(i) for i in range(1, k + 1)):
        raise ValueError(f"give each response a different rank from 1 to {k}")
    by_rank = sorted(range(k), key=lambda letter: int(ranks[letter]))
    return [order[letter] for letter in by_rank], [order[LETTERS.index(f)] for f in flags]


def build_page(
    database: Path, instructions: labeling.Instructions, rankings_per_prompt: int, k: int, hold_seconds: float
):
    import gradio as gr  # only the page needs it: judging and export run without a web stack

    letters = list(LETTERS[:k])

    def show(labeler: str, message: str = ""):
        """Everything the page shows for this labeler's next prompt (or the end)."""
        with closing(connect(database)) as connection:
            prompt_id = next_prompt(connection, labeler, rankings_per_prompt, hold_seconds)
            if prompt_id is not None:
                prompt, responses = connection.execute(
                    "SELECT prompt, responses FROM prompts WHERE prompt_id = ?", (prompt_id,)
                ).fetchone()
        clear = [gr.update(value=None) for _ in letters] + [gr.update(value=[])]
        if prompt_id is None:
            done = f"{message} No prompts left for **{labeler}**. Thank you!".strip()
            return [{"labeler": labeler}, done, "", *["" for _ in letters], *clear]
        responses, order = json.loads(responses), shown_order(labeler, prompt_id, k)
        state = {"labeler": labeler, "prompt_id": prompt_id, "order": order}
        status = f"{message} Labeler **{labeler}**, prompt {prompt_id}.".strip()
        return [state, status, labeling.render_prompt(json.loads(prompt)), *[responses[i] for i in order], *clear]

    def start(labeler):
        labeler = (labeler or "").strip()
        if not labeler or labeler == "judge":
            raise gr.Error("Enter your labeler id (any name but 'judge').")
        return show(labeler)

    def submit(state, *answers):
        if "prompt_id" not in state:
            raise gr.Error("Enter your labeler id and press Start first.")
        try:
            ranking, flagged = ranking_from_page(list(answers[:k]), answers[k] or [], state["order"])
        except ValueError as error:
            raise gr.Error(str(error)) from None
        # Each request has its own connection: Gradio runs handlers in threads, and a shared connection
        # would mix two labelers' transactions.
        with closing(connect(database)) as connection:
            save_ranking(
                connection,
                state["prompt_id"],
                state["labeler"],
                "human",
                ranking,
                flagged,
                instructions=instructions.version,
            )
        return show(state["labeler"], "Saved.")

    def skip(state):
        if "prompt_id" not in state:
            raise gr.Error("Enter your labeler id and press Start first.")
        with closing(connect(database)) as connection:
            save_ranking(
                connection, state["prompt_id"], state["labeler"], "human", None, [], instructions=instructions.version
            )
        return show(state["labeler"], "Skipped.")

    with gr.Blocks(title="lmforge: rank responses", analytics_enabled=False) as page:
        labeling.instructions_panel(gr, instructions)
        gr.Markdown(
            "## Rank the responses\nGive each response a rank, 1 = best. Tick a response as harmful if "
            "it is; it will count below every other. Skip a prompt you cannot judge."
        )
        state = gr.State({})
        with gr.Row():
            labeler = gr.Textbox(label="Labeler id", elem_id="labeler", scale=3)
            start_button = gr.Button("Start", elem_id="start", scale=1)
        status = gr.Markdown(elem_id="status")
        prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="prompt")
        texts, ranks = [], []
        for letter in letters:
            with gr.Row():
                texts.append(
                    gr.Textbox(
                        label=f"Response {letter}", interactive=False, lines=3, scale=4, elem_id=f"response-{letter}"
                    )
                )
                ranks.append(
                    gr.Radio(
                        [str(i) for i in range(1, k + 1)], label=f"Rank of {letter}", scale=1, elem_id=f"rank-{letter}"
                    )
                )
        flags = gr.CheckboxGroup(letters, label="Harmful", elem_id="flags")
        with gr.Row():
            submit_button = gr.Button("Submit ranking", variant="primary", elem_id="submit")
            skip_button = gr.Button("Skip", elem_id="skip")
        outputs = [state, status, prompt, *texts, *ranks, flags]
        start_button.click(start, [labeler], outputs)
        submit_button.click(submit, [state, *ranks, flags], outputs)
        skip_button.click(skip, [state], outputs)
    return page


# Export --------------------------------------------------------------------------------------------------


def ranking_pairs(ranking: list[int], flagged: list[int], scores: list | None, responses: list[str]) -> list:
    """(chosen, rejected, rank_gap) for every pair of a ranking that states a preference."""
    flagged = set(flagged)
    order = [i for i in ranking if i not in flagged] + [i for i in ranking if i in flagged]
    pairs = []
    for (a, chosen), (b, rejected) in combinations(enumerate(order), 2):
        if {chosen, rejected} <= flagged or responses[chosen] == responses[rejected]:
            continue  # no preference between two harmful answers, or between a text and itself
        if scores is not None and scores[chosen] == scores[rejected]:
            continue  # a judge's tie
        pairs.append((chosen, rejected, b - a))
    return pairs


def agreement(preferences: dict) -> dict:
    """How often two rankings of the same prompt order a pair of responses the same way."""
    comparisons = agreements = prompts = 0
    for rankings in preferences.values():
        if len(rankings) < 2:
            continue
        prompts += 1
        for first, second in combinations(rankings, 2):
            for pair in first.keys() & second.keys():
                comparisons += 1
                agreements += first[pair] == second[pair]
    return {
        "prompts_ranked_more_than_once": prompts,
        "pair_comparisons": comparisons,
        "agreements": agreements,
        "pairwise_agreement": agreements / comparisons if comparisons else None,
    }


def export(connection, output_dir: Path, test_fraction: float, seed: int) -> dict:
    rows = connection.execute(
        "SELECT r.id, r.prompt_id, r.labeler, r.source, r.ranking, r.flagged, r.scores, r.instructions, p.prompt, "
        "p.responses FROM rankings r JOIN prompts p USING (prompt_id) WHERE r.status = 'ranked' ORDER BY r.id"
    ).fetchall()
    pairs, preferences = [], {}
    for ranking_id, prompt_id, labeler, source, ranking, flagged, scores, instructions, prompt, responses in rows:
        responses, prompt = json.loads(responses), json.loads(prompt)
        kept = ranking_pairs(json.loads(ranking), json.loads(flagged), scores and json.loads(scores), responses)
        preferences.setdefault(prompt_id, []).append({(min(c, r), max(c, r)): c < r for c, r, _ in kept})
        pairs += [
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": responses[c]}],
                "rejected": [{"role": "assistant", "content": responses[r]}],
                "source": source,
                "labeler": labeler,
                "prompt_id": prompt_id,
                "ranking_id": ranking_id,
                "rank_gap": gap,
                "instructions": instructions,
            }
            for c, r, gap in kept
        ]
    if not pairs:
        raise LmforgeError(f"{output_dir / 'rankings.sqlite'}: no rankings with a preference to export yet")

    splits = save_pairs(pairs, output_dir, test_fraction, seed)

    report = agreement(preferences)
    write_json(output_dir / "agreement.json", report)
    counts = {
        "rankings": len(rows),
        "pairs": len(pairs),
        "train_pairs": len(splits["train"]),
        "test_pairs": len(splits["test"]),
        "test_prompts": len(set(splits["test"]["prompt_id"])),
        "by_source": {s: sum(p["source"] == s for p in pairs) for s in sorted({p["source"] for p in pairs})},
        "skipped": connection.execute("SELECT COUNT(*) FROM rankings WHERE status = 'skipped'").fetchone()[0],
    }
    write_json(output_dir / "export.json", counts)
    print(
        f"label: {counts['pairs']} pairs from {counts['rankings']} rankings ({counts['by_source']}), "
        f"{counts['test_pairs']} held out; agreement {report['pairwise_agreement']} -> {output_dir / 'preferences'}"
    )
    return counts


def main(config: LabelConfig) -> None:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recover_dir(output_dir / "preferences")  # a previous export killed while it swapped the pairs in
    if config.page == "write":
        return write_page(config, output_dir)
    page = not config.judges and not config.export
    instructions = load_instructions(config.instructions) if page else None
    database = output_dir / "rankings.sqlite"
    rollouts = load_rollouts(config.rollouts)
    with closing(connect(database)) as connection:
        store_prompts(connection, rollouts, database)
        if config.judges:
            print(f"label: the judges ranked {judge_all(connection, rollouts, config.judges)} prompts")
        if config.export:
            export(connection, output_dir, config.test_fraction, config.seed)
    if page:
        k = len(rollouts[0]["responses"])
        build_page(database, instructions, config.rankings_per_prompt, k, config.reservation_minutes * 60).launch(
            server_name=config.host, server_port=config.port, share=False, inbrowser=False
        )


def write_page(config: LabelConfig, output_dir: Path) -> None:
    """The writing page (lmforge.lib.writing): drafts for the prompts that lack one, then the page; or the export."""
    database = writing.database(output_dir)
    with closing(labeling.connect(database, writing.SCHEMA)) as connection:
        if config.export:
            writing.export(connection, output_dir, config.min_pair_edit_words, config.test_fraction, config.seed)
            return
        instructions = load_instructions(config.instructions)
        prompts = writing.load_prompts(config.prompts, config.rollouts, config.seed)
        todo = writing.missing_drafts(connection, prompts, database)
        if todo:  # the model loads only when drafts are missing: a restarted page starts at once
            model, tokenizer = load_for_generation(config.model, "to draft replies with")
            greedy = ChatConfig(model_name_or_path=config.model, max_new_tokens=config.max_new_tokens, do_sample=False)
            writing.store_drafts(
                connection, prompts, todo, partial(generate_reply, model, tokenizer, config=greedy), config.model
            )
    page = writing.build_page(database, instructions, config.replies_per_prompt, config.reservation_minutes * 60)
    page.launch(server_name=config.host, server_port=config.port, share=False, inbrowser=False)


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
