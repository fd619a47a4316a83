"""A chat page (Gradio) for a saved assistant model: streamed replies, system prompt and sampling settings.

    lmforge serve --config recipes/demo/serve.yaml                # http://127.0.0.1:7860
    lmforge serve --config recipes/demo/serve.yaml --model_name_or_path runs/demo/dpo --tools python

The page keeps the conversation; each turn the whole of it (after the system prompt box's text) is
rendered with the model's chat template, exactly as `lmforge chat` does: both call
lmforge.lib.assistant.generate_reply. The reply is generated in a thread and streamed to the page piece by piece.
With `tools: [python, search]` the assistant's tool calls run and their results appear in the reply.
The page listens on `host` (loopback by default: this machine only) and sends no analytics.
"""

import queue
import threading
from dataclasses import dataclass, field, replace

import torch

from lmforge.lib.assistant import ChatConfig, generate_reply, load_assistant, new_conversation
from lmforge.lib.configs import parse
from lmforge.lib.tools import load_tools


@dataclass
class ServeConfig(ChatConfig):
    host: str = field(default="127.0.0.1", metadata={"help": "The page listens here (loopback: this machine only)."})
    port: int = 7860


CONFIGS = (ServeConfig,)


def stream_reply(model, tokenizer, messages: list[dict], config: ChatConfig, tools: dict):
    """Yield (text so far, None) while the reply is generated, then (text shown, the message's content).

    The content differs from the text shown only with tools: it keeps the call and result markers."""
    pieces, finished, outcome = queue.Queue(), object(), {}

    def run():
        try:
            outcome["reply"] = generate_reply(
                model,
                tokenizer,
                messages,
                config,
                tools,
                on_text=pieces.put,
                on_result=lambda result: pieces.put(f"\n[result] {result}\n"),
            )
        except Exception as error:  # raised again in the page's handler, which shows it
            outcome["error"] = error
        finally:
            pieces.put(finished)

    # generate() blocks until the reply is complete: a thread runs it while this generator hands on its text.
    threading.Thread(target=run, daemon=True).start()
    shown = ""
    while (piece := pieces.get()) is not finished:
        shown += piece
        yield shown, None
    if "error" in outcome:
        raise outcome["error"]
    yield shown.strip(), outcome["reply"]


def build_page(model, tokenizer, config: ServeConfig, tools: dict):
    import gradio as gr  # only the page needs it

    def respond(text, history, conversation, system_prompt, do_sample, temperature, top_p, max_new_tokens):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.")
        settings = replace(
            config,
            system_prompt=system_prompt.strip() or None,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=int(max_new_tokens),
        )
        conversation = conversation + [{"role": "user", "content": text}]
        history = history + [{"role": "user", "content": text}]
        for shown, content in stream_reply(
            model, tokenizer, new_conversation(settings) + conversation, settings, tools
        ):
            done = [] if content is None else [{"role": "assistant", "content": content}]
            yield "", history + [{"role": "assistant", "content": shown}], conversation + done

    with gr.Blocks(title=f"lmforge: {config.model_name_or_path}", analytics_enabled=False) as page:
        gr.Markdown(f"## Chat with `{config.model_name_or_path}`")
        conversation = gr.State([])  # what the model reads: tool markers kept
        chatbot = gr.Chatbot(elem_id="chat", height=480, render_markdown=False)
        with gr.Row():
            message = gr.Textbox(placeholder="Your message", show_label=False, scale=5, elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            new = gr.Button("New conversation", scale=1, elem_id="new")
        with gr.Accordion("Settings", open=False, elem_id="settings"):
            system_prompt = gr.Textbox(
                config.system_prompt or "", label="System prompt", lines=2, elem_id="system-prompt"
            )
            do_sample = gr.Checkbox(config.do_sample, label="Sample (off: greedy)", elem_id="do-sample")
            temperature = gr.Slider(0.05, 2.0, config.temperature, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1.0, config.top_p, step=0.05, label="top_p")
            max_new_tokens = gr.Slider(1, 2048, config.max_new_tokens, step=1, label="max_new_tokens")
        inputs = [message, chatbot, conversation, system_prompt, do_sample, temperature, top_p, max_new_tokens]
        outputs = [message, chatbot, conversation]
        send.click(respond, inputs, outputs)
        message.submit(respond, inputs, outputs)
        new.click(lambda: ([], []), None, [chatbot, conversation])
    return page


def main(config: ServeConfig) -> None:
    model, tokenizer = load_assistant(config)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    page = build_page(model, tokenizer, config, load_tools(config.tools))
    print(f"serve: {config.model_name_or_path} on http://{config.host}:{config.port}")
    page.launch(server_name=config.host, server_port=config.port, share=False, inbrowser=False)


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
