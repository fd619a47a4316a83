"""The python tool's sandbox holds against each attack of issue 13, with the in-process audit hook defeated.

Every attack first gets around the audit hook, as hostile code can: `sys.audit` replaced by a no-op means
subprocess.Popen never announces itself, so the attack runs in a fresh interpreter without any hook
(`escape`), or a helper the hook relies on (os.path.realpath) is replaced. What stops it is the kernel.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from lmforge import LmforgeError
from lmforge.lib.tools import format_call, run_call
from lmforge.lib.tools.python import UNSAFE, PythonTool


TOOL = PythonTool(timeout=3, memory_mb=256, scratch_mb=4, processes=32)


def escape(code: str) -> str:
    """A snippet that runs `code` in a new interpreter the audit hook never sees, and prints what it printed."""
    return (
        "import subprocess, sys\n"
        "sys.audit = lambda *args: None  # subprocess.Popen's audit event is now never raised\n"
        f"done = subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True)\n"
        "print(done.stdout, done.stderr)"
    )


def survivors(token: str) -> list[str]:
    """Host processes whose command line holds `token`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if token.encode() in file.read():
                    found.append(pid)
        except OSError:  # gone meanwhile
            pass
    return found


def test_normal_snippets_still_work():
    assert TOOL.run({"code": "print(17 * 23)"}) == "391"
    assert run_call({"python": TOOL}, format_call("python", {"code": "import os\nprint(os.getcwd())"})) == "/scratch"


def test_the_escape_really_gets_past_the_audit_hook():
    """Without this the tests below would prove only the hook: here the hooked path is refused, the escape runs."""
    assert "subprocess.Popen is not allowed" in TOOL.run({"code": "import subprocess\nsubprocess.run(['true'])"})
    assert TOOL.run({"code": escape("import os; print('uid', os.getuid(), os.getgid())")}) == "uid 65534 65534"


def test_files_outside_scratch_are_out_of_reach_even_with_the_hook_fooled(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_parentsecret123")
    # /proc/PID/environ shows a process's environment at its start: a process that started with the token
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={"HF_TOKEN": "hf_holder456"})
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    marker = tmp_path / "marker"
    code = f"""
import glob, os
os.path.realpath = lambda path: os.getcwd()  # every path now looks inside the scratch folder to the hook
for path in ['/etc/shadow', {str(secret)!r}, '/proc/{holder.pid}/environ', '/proc/{os.getpid()}/environ',
             *glob.glob('/proc/*/environ')]:
    try:
        print(path, open(path, 'rb').read())
    except OSError as error:
        print(path, type(error).__name__)
for path in [{str(marker)!r}, '/marker', '/usr/lib/marker']:
    try:
        open(path, 'w').write('escaped')
    except OSError as error:
        print(path, type(error).__name__)
print(sorted(os.environ))
"""
    try:
        for result in [TOOL.run({"code": code}), TOOL.run({"code": escape(code)})]:  # the hook fooled, the hook gone
            assert "/etc/shadow FileNotFoundError" in result and f"{secret} FileNotFoundError" in result
            assert "hf_parentsecret123" not in result and "hf_holder456" not in result and "do not read" not in result
            assert f"{marker} FileNotFoundError" in result and "/marker OSError" in result
    finally:
        holder.kill()
    assert not marker.exists()


def test_no_process_outlives_the_call():
    """A process started past the hook, in its own session, after the snippet exits or at the time limit."""
    token = uuid.uuid4().hex
    background = f"import time; time.sleep(60)  # {token}"
    spawn = (
        f"import subprocess, sys\nsys.audit = lambda *args: None\n"
        f"subprocess.Popen([sys.executable, '-c', {background!r}], start_new_session=True)\n"
    )
    assert TOOL.run({"code": spawn + "print('started')"}) == "started"
    assert survivors(token) == []
    assert TOOL.run({"code": spawn + "import time\ntime.sleep(60)"}) == "error: timed out after 3 s"
    assert survivors(token) == []
    shell = TOOL.run({"code": escape("import subprocess; subprocess.run(['/bin/sh', '-c', 'id'])")})
    assert "FileNotFoundError" in shell and "uid=" not in shell  # no shell in the sandbox


def test_the_parent_cannot_be_signalled():
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *args: received.append(args))
    try:
        code = f"""
import os, signal
for attempt in [lambda: os.kill({os.getpid()}, signal.SIGUSR1), lambda: os.kill({os.getppid()}, signal.SIGUSR1),
                lambda: signal.pidfd_send_signal(os.pidfd_open({os.getpid()}), signal.SIGUSR1),
                lambda: signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGUSR1)]:
    try:
        attempt()
    except OSError as error:
        print(type(error).__name__)
"""
        TOOL.run({"code": escape(code)})
        time.sleep(0.2)
        assert received == []
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_fork_bomb_ends_at_the_process_limit():
    count = """
import os, time
n = 0
while True:
    try:
        if os.fork() == 0:
            time.sleep(1)  # holds its place, then lets the output close
            os._exit(0)
    except OSError as error:
        print('forks', n, error.strerror)
        break
    n += 1
"""
    forks, n, *reason = TOOL.run({"code": escape(count)}).split()
    assert forks == "forks" and int(n) < 32 and " ".join(reason) == "Resource temporarily unavailable"
    token = uuid.uuid4().hex
    bomb = f"import os  # {token}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    start = time.monotonic()
    assert TOOL.run({"code": escape(bomb)}) == "error: timed out after 3 s"
    assert time.monotonic() - start < 10 and survivors(token) == []


def test_a_disk_fill_ends_at_the_scratch_size():
    fill = """
import os
n = 0
try:
    while True:
        with open(f'f{n}', 'wb') as file:
            file.write(b'x' * 65536)
        n += 1
except OSError as error:
    print(n, error.strerror, os.statvfs('.').f_blocks * os.statvfs('.').f_frsize)
"""
    n, *reason, size = TOOL.run({"code": escape(fill)}).split()
    assert " ".join(reason) == "No space left on device" and int(size) == 4 * 2**20 and int(n) <= 64


def test_host_paths_cannot_be_probed(tmp_path):
    probe = f"""
import os
print([os.path.exists(path) for path in [{str(tmp_path)!r}, '/work', '/etc/passwd', '/root/.ssh', '/home', '/bin/sh']])
print(*sorted(os.listdir('/')))
"""
    exists, listing = TOOL.run({"code": escape(probe)}).splitlines()[:2]
    assert exists == str([False] * 6)
    assert set(listing.split()) <= {"dev", "proc", "scratch", "usr", "lib", "lib64", "lib32", "root", "opt"}


def test_no_network_even_without_the_audit_hook():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
import socket
for address in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:
    try:
        socket.create_connection(address, 2)
        print('connected')
    except OSError as error:
        print(error)
"""
    result = TOOL.run({"code": escape(code)})
    assert "connected" not in result and "unreachable" in result
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


def test_missing_bubblewrap_refuses_in_one_line_unless_unsafe_is_asked_for(monkeypatch):
    monkeypatch.delenv(UNSAFE, raising=False)
    with pytest.raises(LmforgeError, match=r"no sandbox \(/nonexistent/bwrap not found\).*apt-get install bubblewrap"):
        PythonTool(bwrap="/nonexistent/bwrap")
    monkeypatch.setenv(UNSAFE, "1")
    assert PythonTool(bwrap="/nonexistent/bwrap").run({"code": "print(17 * 23)"}) == "391"
