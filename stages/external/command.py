"""One run of an external tool: fill the command template, start it as a fresh process, log it, enforce a timeout.

Why a fresh process per item: research code is rarely a package. It imports top-level modules such as `utils` that
would shadow ours (or another tool's) in one interpreter, it may initialise CUDA (which breaks in forked children),
and it may need another Python environment altogether. `subprocess` execs a new program image — spawn semantics: no
module, thread or CUDA state of ours is inherited — and the tool gets its own session, so a timeout kills the tool
and every child it started.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import string
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardprep.runtime.errors import ConfigError

# Variables that would make the tool's interpreter import from our environment instead of its own.
PYTHON_LEAKS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH")
# Read by torch >= 2.6: torch.load defaults to weights_only=False where the call site does not say.
TRUST_CHECKPOINTS_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Command:
    """How to start a tool. `template` is an argv list (or one string, split like a shell would) whose parts are
    `str.format` templates, e.g. `["{python}", "run.py", "--video", "{input}", "--out", "{output}"]`.

    `python_env` is the prefix of another virtualenv/conda env: its `bin/` goes first on PATH and `{python}` is its
    interpreter. `env` adds variables; our PYTHONPATH/PYTHONHOME never reach the tool. `trust_checkpoints` lets the
    tool's own `torch.load` calls unpickle full checkpoints (weights_only=False) — in that process only.
    """

    template: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    python_env: Path | None = None
    timeout_s: float | None = None
    trust_checkpoints: bool = False

    @classmethod
    def from_config(cls, template: str | Sequence[str], cwd: str | None = None, env: Mapping[str, Any] | None = None,
                    python_env: str | None = None, timeout_s: float | None = None,
                    trust_checkpoints: bool = False) -> Command:
        parts = tuple(shlex.split(template) if isinstance(template, str) else (str(part) for part in template))
        if not parts:
            raise ConfigError("stage.command is empty: give the tool's command line, e.g. [\"{python}\", run.py, ...]")
        return cls(
            template=parts,
            cwd=Path(cwd).expanduser() if cwd else None,
            env={str(key): str(value) for key, value in (env or {}).items()},
            python_env=Path(python_env).expanduser() if python_env else None,
            timeout_s=float(timeout_s) if timeout_s else None,
            trust_checkpoints=bool(trust_checkpoints),
        )

    @property
    def python(self) -> str:
        return str(self.python_env / "bin" / "python") if self.python_env else "python3"

    def placeholders(self) -> set[str]:
        """The top-level names the template uses (`{inputs[vipe]}` -> `inputs`)."""
        names = set()
        for part in self.template:
            for _, name, _, _ in string.Formatter().parse(part):
                if name is not None:
                    names.add(name.split("[", 1)[0].split(".", 1)[0])
        return names

    def validate(self, known: set[str]) -> None:
        unknown = self.placeholders() - known - {"python"}
        if unknown:
            raise ConfigError(f"stage.command uses unknown placeholder(s) {sorted(unknown)}: known are "
                              f"{sorted(known | {'python'})}")
        if self.cwd is not None and not self.cwd.is_dir():
            raise ConfigError(f"stage.cwd={self.cwd} is not a folder: point it at the tool's checkout")
        if self.python_env is not None and not Path(self.python).exists():
            raise ConfigError(f"stage.python_env={self.python_env}: {self.python} not found (give the env's prefix)")

    def argv(self, values: Mapping[str, Any]) -> list[str]:
        return [part.format_map({"python": self.python, **values}) for part in self.template]

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in PYTHON_LEAKS}
        if self.python_env is not None:
            env["PATH"] = f"{self.python_env / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(self.python_env)
        if self.trust_checkpoints:
            env[TRUST_CHECKPOINTS_ENV] = "1"
        env.update(self.env)
        return env


@dataclass
class Outcome:
    """What one run of the tool did. `returncode` is negative for a signal (as in `subprocess`)."""

    argv: list[str]
    returncode: int
    timed_out: bool
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run(command: Command, argv: list[str], log: Path, on_start: Callable[[int], None] | None = None) -> Outcome:
    """Run `argv` to completion (or its timeout); stdout and stderr are appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "ab") as sink:
        sink.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n".encode())
        sink.flush()
        try:
            process = subprocess.Popen(
                argv, cwd=command.cwd, env=command.environment(), stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
        except OSError as error:  # program not found / not executable: the item fails, the shard goes on
            raise RuntimeError(f"cannot start {argv[0]!r} ({error.strerror}): check stage.command and stage.cwd") from None
        _running.add(process)
        timed_out = False
        try:
            if on_start is not None:
                on_start(process.pid)
            process.wait(timeout=command.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_session(process)
        except BaseException:  # our task is being stopped: never leave the tool running on the node
            _kill_session(process)
            raise
        finally:
            _running.discard(process)
        seconds = time.monotonic() - started
        sink.write(f"=== exit {process.returncode}{' (timed out)' if timed_out else ''} after {seconds:.1f} s\n".encode())
    return Outcome(argv, process.returncode, timed_out, seconds, log)


# Tools now running: in their own sessions, so a signal to our process group does not reach them; they are ended
# when our interpreter exits (a cancelled or requeued task) instead of running on unowned.
_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_running() -> None:
    for process in list(_running):
        _kill_session(process)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the tool's whole session, SIGKILL it after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(log: Path, lines: int = 8, max_bytes: int = 65536) -> str:
    """The last lines of a log (read from its end only), for error messages."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
