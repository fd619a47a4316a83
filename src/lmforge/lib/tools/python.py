"""The `python` tool: run a short snippet in an operating-system sandbox and return what it printed.

Arguments: {"code": "print(17 * 23)"}. Result: standard output (stripped), or `error: ...` with the last
line of the traceback, a timeout or a limit that was hit.

The sandbox is bubblewrap (`bwrap`, Debian package `bubblewrap`): the kernel enforces every line below.

    identity        uid and gid 65534 (nobody) on the host too, no capabilities, no supplementary groups,
                    and no new user namespaces inside (`--disable-userns`)
    files           a new mount namespace holding only, read-only, the interpreter's prefix and the shared
                    libraries (/usr/lib, /lib*); a tmpfs of `scratch_mb` as the only writable place and the
                    working directory; / and a minimal /dev read-only; a /proc of its own pid namespace
    processes       a new pid namespace, whose init is bwrap: when the snippet exits, or when the parent kills
                    that init at the time limit, the kernel kills every process left in it before the call
                    returns; RLIMIT_NPROC (`processes`) ends a fork bomb
    network         a new network namespace with nothing in it (also new ipc, uts and cgroup namespaces)
    wall time       `timeout` seconds, then the namespace's init is killed; RLIMIT_CPU as a backstop
    memory          RLIMIT_AS of `memory_mb` per process: large allocations raise MemoryError
    output, files   RLIMIT_FSIZE (`output_bytes`) on each file, the captured output included, which is read
                    back at most `output_bytes` long; the model reads at most MAX_RESULT_CHARS of it
    environment     empty; `python -I -S -B`: isolated mode, no site-packages

Run as root, bwrap maps the sandbox's uid to host uid 0, which RLIMIT_NPROC does not limit. So a root
parent first runs a privileged bwrap that shows the interpreter at a path nobody can reach (under /root,
say) and drops to uid 65534 with `setpriv`; the sandboxing bwrap then runs as that user.

Inside, an audit hook (PEP 578) refuses sockets, subprocesses, ctypes and files outside the scratch folder.
It is a second layer that gives ordinary mistakes a clear error; code can get around it (it lives in the
interpreter it guards), the sandbox above is what holds.

Where bwrap is missing or cannot make namespaces, building the tool fails with one line saying how to
install it. LMFORGE_UNSAFE_PYTHON_TOOL=1 in the environment runs snippets without the sandbox instead: a
plain child process as the same user with only the limits and the audit hook (not safe for untrusted code).
"""

import functools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, ClassVar

from lmforge import LmforgeError
from lmforge.lib.tools.protocol import ToolError


UNSAFE = "LMFORGE_UNSAFE_PYTHON_TOOL"
NOBODY = "65534"
SCRATCH = "/scratch"

# Runs in the child before the snippet: read the snippet, install the hook, run it as __main__.
GUARD = r"""
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
"""


def interpreter() -> str:
    """The real interpreter behind the virtual environment's link."""
    return os.path.realpath(sys.executable)


def library_mounts() -> list[str]:
    """bwrap arguments that show, read-only, the interpreter's prefix and the shared libraries it loads."""
    prefixes = [os.path.dirname(os.path.dirname(interpreter())), os.path.realpath(sys.base_prefix)]
    arguments = []
    for path in dict.fromkeys(["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", *prefixes]):
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    return arguments


def sandbox_command(bwrap: str, scratch_bytes: int, info_fd: int) -> list[str]:
    """The command prefix that runs a program in the sandbox. bwrap writes the host pid of the pid namespace's
    init to `info_fd` (JSON, "child-pid")."""
    sandbox = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--uid",
        NOBODY,
        "--gid",
        NOBODY,
        *library_mounts(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(scratch_bytes),
        "--tmpfs",
        SCRATCH,
        "--chdir",
        SCRATCH,
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--clearenv",
    ]  # after the mounts: / is read-only
    if os.geteuid() != 0:
        return [bwrap, "--info-fd", str(info_fd), *sandbox]
    # As root (see the module's docstring): a privileged bwrap shows bwrap and setpriv (/usr), the interpreter
    # under parents uid 65534 may enter, the host /proc (the inner bwrap writes its uid map there and may mount
    # a new one only where a whole one is visible), a /tmp that bwrap builds its root in; setpriv drops to 65534.
    prefix, parents = os.path.dirname(os.path.dirname(interpreter())), []
    while (prefix := os.path.dirname(prefix)) != "/":
        parents = ["--perms", "0755", "--dir", prefix, *parents]
    return [
        bwrap,
        "--info-fd",
        str(info_fd),
        "--unshare-pid",
        "--die-with-parent",
        "--dir",
        "/tmp",
        *parents,
        "--ro-bind",
        "/usr",
        "/usr",
        *library_mounts(),
        "--bind",
        "/proc",
        "/proc",
        "--dev",
        "/dev",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        shutil.which("setpriv"),
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        bwrap,
        *sandbox,
    ]


@functools.cache
def sandbox_problem(bwrap: str) -> str:
    """Why the sandbox cannot run here, in a few words, or "" where it runs."""
    if not shutil.which(bwrap):
        return f"{bwrap} not found"
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "setpriv (util-linux) not found"
    info, info_write = os.pipe()
    with os.fdopen(info, "rb"):
        done = subprocess.run(
            [*sandbox_command(bwrap, 2**20, info_write), interpreter(), "-I", "-S", "-c", "pass"],
            capture_output=True,
            text=True,
            pass_fds=(info_write,),
            env={},
            timeout=60,
        )
    os.close(info_write)
    lines = done.stderr.strip().splitlines()
    return (lines[-1] if lines else f"exit status {done.returncode}") if done.returncode else ""


def open_init(info: int) -> int | None:
    """A pidfd of the sandbox's init, whose host pid bwrap writes to --info-fd; None if bwrap stopped first.
    The init lives until the snippet ends, and the snippet waits for its code on stdin: the pid is not reused."""
    data = b""
    with os.fdopen(info, "rb", buffering=0) as file:
        while not data.rstrip().endswith(b"}") and (chunk := file.read(4096)):
            data += chunk
    try:
        return os.pidfd_open(json.loads(data)["child-pid"]) if data else None
    except ProcessLookupError:
        return None


@dataclass
class PythonTool:
    """Run Python code and read what it prints: {"code": "print(17 * 23)"}. Standard library only, no network, no
    files outside a scratch folder."""

    name: ClassVar[str] = "python"
    # What a Hub model's chat template shows it (apply_chat_template(tools=...)); lmforge's tokenizer learns the
    # tool from its SFT conversations instead.
    schema: ClassVar[dict] = {
        "type": "function",
        "function": {
            "name": "python",
            "description": "Run a short Python snippet (standard library only, no network) and return what it prints.",
            "parameters": {
                "type": "object",
                "required": ["code"],
                "properties": {"code": {"type": "string", "description": "Python code; print what you want to read."}},
            },
        },
    }
    timeout: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 1_000_000
    scratch_mb: int = 16
    processes: int = 32
    bwrap: str = "bwrap"

    def __post_init__(self):
        self.sandboxed = os.environ.get(UNSAFE) != "1"
        if self.sandboxed and (problem := sandbox_problem(self.bwrap)):
            raise LmforgeError(
                f"python tool: no sandbox ({problem}); install bubblewrap (apt-get install bubblewrap"
                f", or make sandbox), or set {UNSAFE}=1 to run snippets unsandboxed"
            )

    def run(self, arguments: dict) -> str:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError('python needs {"code": "..."} with some code')
        with (
            tempfile.TemporaryDirectory(prefix="lmforge-python-") as scratch,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
        ):
            child, init = self.start(scratch, stdout, stderr)
            try:
                child.communicate(code.encode(), timeout=self.timeout)
            except subprocess.TimeoutExpired:
                if init is None:
                    os.killpg(child.pid, signal.SIGKILL)
                else:  # killing the init makes the kernel kill every process in the namespace
                    signal.pidfd_send_signal(init, signal.SIGKILL)
                child.wait()
                return f"error: timed out after {self.timeout:g} s"
            finally:
                if init is not None:  # bwrap may exit first: wait until the init, and so all in it, is gone
                    select.select([init], [], [], 10)
                    os.close(init)
            return self.result(child.returncode, read(stdout, self.output_bytes), read(stderr, self.output_bytes))

    def start(self, scratch: str, stdout, stderr) -> tuple[subprocess.Popen, int | None]:
        """The child (bwrap, or the plain interpreter when unsandboxed) and a pidfd of the sandbox's init."""
        command = [interpreter(), "-I", "-S", "-B", "-X", "utf8", "-c", GUARD]
        if not self.sandboxed:
            return subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                cwd=scratch,
                env={"HOME": scratch, "LC_ALL": "C.UTF-8"},
                preexec_fn=self.limit,
                start_new_session=True,
            ), None
        info, info_write = os.pipe()
        try:
            child = subprocess.Popen(
                [*sandbox_command(self.bwrap, self.scratch_mb * 2**20, info_write), *command],
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                env={},
                preexec_fn=self.limit,
                start_new_session=True,
                pass_fds=(info_write,),
            )
        finally:
            os.close(info_write)
        return child, open_init(info)

    def limit(self) -> None:
        """In the child, before exec: the kernel-enforced limits, inherited by every process of the sandbox."""
        memory = self.memory_mb * 2**20
        cpu = int(self.timeout) + 1
        for limit, value in [
            (resource.RLIMIT_AS, memory),
            (resource.RLIMIT_FSIZE, self.output_bytes),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_NPROC, self.processes),
        ]:
            resource.setrlimit(limit, (value, value))

    def result(self, returncode: int, stdout: str, stderr: str) -> str:
        if returncode == 0:
            return stdout.strip() or "(no output)"
        # killed by the CPU limit: a negative status from python, 128 + the signal through bwrap
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
            return f"error: timed out after {self.timeout:g} s"
        lines = stderr.strip().splitlines()
        error = lines[-1] if lines else f"exit status {returncode}"
        return f"error: {error}\n{stdout.strip()}".strip()  # the error first: a long output is cut at the end


def read(file: BinaryIO, limit: int) -> str:
    file.seek(0)
    return file.read(limit).decode("utf-8", errors="replace")
