"""How `make demo` runs streamer: every step is a `streamer` command, printed before it runs, so that a user can
replay any part of the demo by hand from the repository root.

The settings every command runs with are the demo's ``STREAMER_*`` variables, printed once as an ``export`` line
(the demo's own state directory, so that it never touches the stack of ``streamer dev up`` in ``.streamer``). A
command runs as a child process with those variables and nothing else of the caller's ``STREAMER_*``; a command
that fails stops the demo with its exit code and what it printed. Background commands (the worker, the consumers
the demo reads) are stopped by their process id when the demo ends, also on Ctrl-C or an error.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape


class DemoFailed(SystemExit):
    """A step that did not do what the demo needs: the message says which command and why."""


class Shell:
    def __init__(self, console: Console, root: Path, settings: dict[str, str]) -> None:
        self.console, self.root, self.settings = console, root, settings
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | settings
        installed = Path(sys.executable).parent / "streamer"
        self.program = [str(installed)] if installed.exists() else [sys.executable, "-m", "streamer.cli"]
        self.children: list[subprocess.Popen[str]] = []

    def export_line(self) -> str:
        return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in self.settings.items())

    def show(self, args: list[str], suffix: str = "", note: str = "") -> None:
        line = shlex.join(["streamer", *args]) + suffix
        comment = f"  [dim]# {escape(note)}[/]" if note else ""
        self.console.print(f"[bold cyan]$ {escape(line)}[/]{comment}", soft_wrap=True)

    def run(self, *args: str, note: str = "", shown: bool = True, capture: bool = False) -> str:
        """Run ``streamer ARGS`` to the end (its output on the terminal, or returned with ``capture``)."""
        if shown:
            self.show(list(args), note=note)
        result = subprocess.run(
            [*self.program, *args], cwd=self.root, env=self.env, text=True, capture_output=capture, check=False
        )
        if result.returncode != 0:
            said = f":\n{result.stdout}{result.stderr}" if capture else ""
            raise DemoFailed(f"`streamer {shlex.join(args)}` exited with {result.returncode}{said}")
        return result.stdout if capture else ""

    def start(self, *args: str, stderr_to: Path | None = None, note: str = "") -> subprocess.Popen[str]:
        """Start ``streamer ARGS`` in the background (``&``), its stdout readable by the demo."""
        redirect = f" 2> {stderr_to.relative_to(self.root)}" if stderr_to is not None else ""
        self.show(list(args), suffix=f"{redirect} &", note=note)
        stderr: IO[str] | int = subprocess.DEVNULL
        if stderr_to is not None:
            stderr_to.parent.mkdir(parents=True, exist_ok=True)
            stderr = open(stderr_to, "w")  # noqa: SIM115 -- the child's, closed when the child is stopped
        child = subprocess.Popen(
            [*self.program, *args], cwd=self.root, env=self.env, text=True, stdout=subprocess.PIPE, stderr=stderr
        )
        self.children.append(child)
        return child

    def stream(self, *args: str, note: str = "", keep: Callable[[dict[str, Any]], bool] = lambda _: True) -> Stream:
        """``streamer consume ARGS`` in the background, each JSON line it prints parsed as it arrives."""
        return Stream(self.start("consume", *args, note=note), keep)

    def stop(self, child: subprocess.Popen[str], name: str) -> int | None:
        """SIGTERM (what Ctrl-C or `kill %1` sends), then SIGKILL if it is still there after 30 s."""
        if child.poll() is None:
            self.console.print(f"[bold cyan]$ kill {child.pid}[/]  [dim]# {escape(name)}: SIGTERM[/]")
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        return child.returncode

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


class Stream:
    """The JSON lines of a background ``streamer consume``, read on a thread: ``lines`` grows as they arrive."""

    def __init__(self, child: subprocess.Popen[str], keep: Callable[[dict[str, Any]], bool]) -> None:
        self.child, self.keep = child, keep
        self.lines: list[dict[str, Any]] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.child.stdout is not None
        for line in self.child.stdout:
            record = json.loads(line)
            if self.keep(record):
                now = time.monotonic()
                self.first_at = self.first_at or now
                self.last_at = now
                self.lines.append(record)

    def wait_for(self, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """At least ``count`` kept lines, or whatever came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.lines) < count and time.monotonic() < deadline and self.reader.is_alive():
            time.sleep(0.05)
        return self.lines

    def done(self) -> bool:
        return not self.reader.is_alive()
