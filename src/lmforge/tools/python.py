"""The `python` tool: run a short snippet in a separate, limited process and return what it printed.

Arguments: {"code": "print(17 * 23)"}. Result: standard output (stripped), or `error: ...` with the last
line of the traceback, a timeout or a limit that was hit. Each limit and what enforces it:

    wall time       the parent kills the child's process group after `timeout` seconds (plus RLIMIT_CPU)
    memory          RLIMIT_AS of `memory_mb` (set in preexec_fn): large allocations raise MemoryError
    output          RLIMIT_FSIZE (`output_bytes`) on every file it writes, its captured output included;
                    the result the model reads is cut to MAX_RESULT_CHARS (lmforge.tools.protocol)
    network         a new, empty network namespace (`unshare --net`, Linux, needs root or user namespaces)
                    where available; always also an audit hook that refuses every socket
    files           cwd is a fresh temporary directory; an audit hook (PEP 578) refuses opening files
                    outside it except reading the standard library, and refuses paths outside it for
                    os.remove, os.rename, os.listdir and the like
    processes       the audit hook refuses subprocess, os.system, exec, spawn and fork, os.kill, ctypes,
                    gc and changing resource limits (which root could otherwise raise)
    environment     `python -I -S -B`: isolated mode, no site-packages, an empty environment

The audit hook runs inside the child: it stops ordinary and accidental access, not a determined attack
on the interpreter. The namespace and the resource limits are enforced by the kernel.
"""

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import ClassVar

from lmforge.tools.protocol import ToolError

# Runs in the child before the snippet: read the snippet, install the hook, run it as __main__.
GUARD = r'''
import os, sys
code = sys.stdin.read()


def install(scratch, libraries):
    refused = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "pty.", "ctypes.", "resource.setrlimit", "resource.prlimit",
               "os.kill", "os.killpg", "signal.pthread_kill", "os.chroot")
    paths = ("open", "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.symlink",
             "os.link", "os.truncate", "os.utime", "os.listdir", "os.scandir", "os.chdir", "shutil.rmtree",
             "os.setxattr", "os.removexattr", "os.listxattr", "os.getxattr", "shutil.copyfile", "shutil.move")

    def inside(path, roots):
        path = os.path.realpath(os.fsdecode(path))
        return any(path == root or path.startswith(root + os.sep) for root in roots)

    def hook(event, args):
        if event.startswith(refused):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0] in ("gc", "ctypes", "_ctypes"):
            raise PermissionError(f"sandbox: module {args[0]} is not allowed")
        if event not in paths:
            return
        # open's flags say whether it writes; listing a directory only reads.
        writing = event != "open" or args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
        roots = (scratch,) if writing and event not in ("os.listdir", "os.scandir") else (scratch, *libraries)
        for arg in args[:2] if event in ("os.rename", "os.link", "shutil.copyfile", "shutil.move") else args[:1]:
            if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg, roots):
                raise PermissionError(f"sandbox: {os.fsdecode(arg)} is outside the scratch directory")

    sys.addaudithook(hook)


install(os.path.realpath(os.getcwd()), tuple(os.path.realpath(p) for p in sys.path if p))
del install
exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})
'''


@functools.cache
def network_namespace() -> list[str]:
    """The command prefix that runs the child in an empty network namespace, or [] where that is impossible."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net", "--"]
    return []


@dataclass
class PythonTool:
    name: ClassVar[str] = "python"
    description: ClassVar[str] = ('Run Python code and read what it prints: {"code": "print(17 * 23)"}. '
                                  "Standard library only, no network, no files outside a scratch folder.")
    timeout: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 1_000_000

    def run(self, arguments: dict) -> str:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError('python needs {"code": "..."} with some code')
        with tempfile.TemporaryDirectory(prefix="lmforge-python-") as scratch, \
                tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            child = subprocess.Popen(
                [*network_namespace(), sys.executable, "-I", "-S", "-B", "-c", GUARD],
                stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, cwd=scratch,
                env={"PATH": os.defpath, "HOME": scratch, "LC_ALL": "C.UTF-8"},
                preexec_fn=self.limit, start_new_session=True,
            )
            try:
                child.communicate(code.encode(), timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return f"error: timed out after {self.timeout:g} s"
            return self.result(child.returncode, read(stdout), read(stderr))

    def limit(self) -> None:
        """In the child, before exec: the kernel-enforced limits."""
        memory = self.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.output_bytes, self.output_bytes))
        cpu = int(self.timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def result(self, returncode: int, stdout: str, stderr: str) -> str:
        if returncode == 0:
            return stdout.strip() or "(no output)"
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            return f"error: timed out after {self.timeout:g} s"
        lines = stderr.strip().splitlines()
        error = lines[-1] if lines else f"exit status {returncode}"
        return f"error: {error}\n{stdout.strip()}".strip()  # the error first: a long output is cut at the end


def read(file) -> str:
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")
