"""`lmforge launch ...`: `accelerate launch ...`, with a failed process told in one line.

    lmforge launch --config_file accelerate_configs/zero2.yaml -m lmforge.sft --config recipes/smollm-135m/sft.yaml

It takes `accelerate launch`'s arguments unchanged and runs accelerate's launcher in this process. A stage's bad
input already ends in one line per process (`lmforge sft: error: ...`); under `accelerate launch` the multi-process
launcher (torchrun's elastic agent) then adds its log lines and a failure report of some forty lines with its own
traceback, and a one-process launch without `--quiet` adds a CalledProcessError traceback. Here that report is one
line instead, naming the processes that failed: `lmforge launch: rank 1 failed (exit 1); the launcher stopped the
other processes`. `--debug` keeps accelerate's full report.
"""

import logging
import signal
import subprocess
import sys

from accelerate.commands.launch import launch_command, launch_command_parser
from torch.distributed.elastic.multiprocessing import api as processes
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure


class LauncherNotices(logging.Filter):
    """Drops the launcher's log lines about the failure that its one line here reports; keeps every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.msg.startswith(("failed (exitcode", "Sending process"))


def how_it_ended(failure: ProcessFailure) -> str:
    return f"exit {failure.exitcode}" if failure.exitcode >= 0 else failure.signal_name()


def failures_line(error: ChildFailedError) -> str:
    """One line for a failed multi-process launch: each process that failed on its own, not those the launcher
    stopped (SIGTERM) after the first failure."""
    first, _ = error.get_first_failure()
    failed = {
        rank: failure
        for rank, failure in sorted(error.failures.items())
        if rank == first or failure.exitcode != -signal.SIGTERM
    }
    line = "lmforge launch: " + ", ".join(f"rank {rank} failed ({how_it_ended(f)})" for rank, f in failed.items())
    return line + ("; the launcher stopped the other processes" if len(failed) < len(error.failures) else "")


def cli(argv: list[str] | None = None) -> None:
    args = launch_command_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.debug:
        launch_command(args)
        return
    processes.logger.addFilter(LauncherNotices())
    try:
        launch_command(args)
    except ChildFailedError as error:
        sys.exit(failures_line(error))
    except subprocess.CalledProcessError as error:  # one process, started without torchrun
        sys.exit(f"lmforge launch: the process failed (exit {error.returncode})")


if __name__ == "__main__":
    cli()
