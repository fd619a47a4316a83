"""Library notices a user cannot act on, dropped where they are logged, each with the reason it is noise here.

Installed when `lmforge` is imported, so that a stage run by hand (`lmforge STAGE`, `python -m lmforge.STAGE`,
`accelerate launch -m lmforge.STAGE`) prints what it printed before, less these; every other warning of the
libraries is kept. A filter on a logger stays when the library later sets the logger's level or handlers.
"""

import logging
import warnings


# Logger name -> the beginnings of the messages dropped from it.
NOTICES = {
    # DeepSpeed (installed for the launcher configs) says at each import that it found no GPU and uses the CPU, where
    # torch finds none either; the stage's own line says which device it runs on ("sft: process 0 of 1 on HOST (cpu)").
    "DeepSpeed": ("Setting accelerator to CPU",),
    # Two checkpoints saved within a second of each other (short runs): transformers orders them by their step number
    # instead of their times, which is right.
    "transformers.trainer_utils": ("mtime may not be reliable",),
}


class DropNotices(logging.Filter):
    def __init__(self, beginnings: tuple[str, ...]):
        super().__init__()
        self.beginnings = beginnings

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.beginnings)


# Python warnings dropped by their text: TRL 1.12 itself calls transformers 5.23's deprecated
# `is_gradient_checkpointing` each time it generates; only a TRL upgrade changes that.
WARNINGS = (r"`is_gradient_checkpointing` is deprecated",)


def quiet_notices() -> None:
    for text in WARNINGS:
        warnings.filterwarnings("ignore", text, FutureWarning)
    for name, beginnings in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices(beginnings))
