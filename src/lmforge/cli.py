"""`lmforge STAGE [--config recipe.yaml] [--key value ...]`: run one stage of the pipeline.

Each stage is one module of this package with a `cli(argv)` function; this file only dispatches,
so `lmforge data ...` and `python -m lmforge.data ...` do the same thing.
"""

import importlib
import os
import signal
import sys

from lmforge import LmforgeError
from lmforge.lib.stages import STAGES


def usage() -> str:
    lines = ["usage: lmforge STAGE --config recipes/NAME/STAGE.yaml [--key value ...]", "", "stages:"]
    lines += [f"  {name:<12}{stage.description}" for name, stage in STAGES.items()]
    return "\n".join(lines)


STAGE_GROUP = "LMFORGE_STAGE_GROUP"  # set by `lmforge run` for a stage it starts as the leader of a process group


def stop_group_on_sigterm() -> None:
    """A stage started by `lmforge run` hears of the runner's death as SIGTERM (run.die_with): it then takes down its
    whole process group, so that workers it started (datatrove's) do not outlive it. Only there: a stage started by
    hand may share its group with the shell's other commands."""
    if not (os.environ.pop(STAGE_GROUP, None) and os.getpgid(0) == os.getpid()):
        return
    leader = os.getpid()

    def stop(signum, frame):
        if os.getpid() == leader:
            os.killpg(0, signal.SIGKILL)
        # A forked worker inherits this handler, and its pool ends it with SIGTERM: it ends as it would without it.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    stop_group_on_sigterm()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"lmforge: unknown stage {stage!r}\n\n{usage()}")
    module = importlib.import_module(STAGES[stage].module)
    try:
        module.cli(rest)
    except LmforgeError as error:
        # Bad input is the user's to fix: say what and where, without a library traceback.
        sys.exit(f"lmforge {stage}: error: {error}")
    except KeyboardInterrupt:  # Ctrl-C is the user's own doing: no traceback of where it landed
        print(f"\nlmforge {stage}: stopped by Ctrl-C", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
