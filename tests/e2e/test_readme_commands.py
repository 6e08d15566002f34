"""The README's command blocks, run exactly as written, their output checked against the README's.

Two blocks of the README are sessions a user replays from the repository root: "Your first prediction" (dev up,
topics, a worker, a request, its prediction, a label, the rolling evaluation, dev down) and "Scoring graphs" (the
example models and graphs, an entity's features, a graph's prediction, the default model). Each is read from the
README itself (the first ``console`` block under its heading: a line ``$ COMMAND`` is a command, the lines after
it its expected output), so the README and this test cannot drift apart. The commands run one after the other
in ONE bash process, as a user types them into one terminal (``&``, ``export`` and ``kill %1`` mean what they
mean there), in a fresh directory holding a copy of the repository's ``models/`` and ``examples/`` (symlinks
followed: the copy is not a git checkout), against the fresh embedded stack the block's own ``streamer dev up``
starts. The environment is the user's: the checkout's ``streamer`` on ``PATH`` (and ``PYTHONPATH``), no
``STREAMER_*`` variable but ``STREAMER_METRICS_PORT=0``, because on a shared machine another worker may hold the
default port 9464 (the port a worker prints is masked like every number below).

Checks, command by command: exit code 0; no traceback; every line of expected output the README shows appears in
what the command printed once numbers are masked (ports, pids, scores, timings change between runs; the words,
fields, tables and their columns do not) -- a line with ``…`` is abridged and not compared. A read-only command
whose output is not there yet (``eval show`` before the worker joined the labels, ``consume`` before the worker
answered) is run again, exactly as written, until it is, within a generous bound. Then what the outputs mean,
block by block (the ``check_*`` functions).

The time from ``streamer dev up`` to the first consumed prediction is printed (``-s`` shows it); it is a figure,
not an assertion.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer.adapters import devstack
from streamer.core.outputs import FIELDS
from tests.conftest import REPO

ABRIDGED = "…"
READ_ONLY = ("streamer consume", "streamer eval show")  # may be run again until their output is there
RETRY_FOR_S = 120.0  # a loaded 2-core machine can take tens of seconds to start a worker and join its groups
COMMAND_TIMEOUT_S = 180.0


@dataclass
class Step:
    command: str
    expected: list[str]


@dataclass
class Ran:
    command: str
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Session:
    """A block's commands as they ran, and the directory they ran in."""

    home: Path
    ran: list[Ran]

    def outputs(self, prefix: str) -> list[Ran]:
        return [r for r in self.ran if r.command.startswith(prefix)]


def readme_steps(readme: str, heading: str) -> list[Step]:
    """The commands of the first ``console`` block under ``heading``, each with the output lines shown after it."""
    section = readme[readme.index(f"\n{heading}\n") :]
    start = section.index("```console\n") + len("```console\n")
    block = section[start : section.index("\n```", start)]
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:], []))
        elif steps:
            steps[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"output before the first command in the README's block: {line!r}")
    return steps


def shape(line: str) -> str:
    """What of an output line stays the same between runs: numbers masked, table rules and padding collapsed."""
    line = re.sub(r"\d+", "#", line)
    line = re.sub(r"([━─═])\1+", r"\1", line)
    return re.sub(r"\s+", " ", line).strip()


def missing_lines(expected: list[str], printed: str) -> list[str]:
    """The README's lines for a command that its real output lacks (abridged and blank lines aside)."""
    shapes = {shape(line) for line in printed.splitlines()}
    return [line for line in expected if line.strip() and ABRIDGED not in line and shape(line) not in shapes]


class Terminal:
    """One bash process fed one command at a time, as a user types them; each command's stdout, stderr and exit
    code go to files of their own, so each can be checked before the next runs."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.dir = cwd, cwd.parent / "terminal"
        self.dir.mkdir()
        self.count = 0
        self.background: list[int] = []
        self.log = open(self.dir / "shell.out", "w")  # noqa: SIM115 -- lives as long as the shell
        self.shell = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, command: str) -> tuple[Ran, Path]:
        self.count += 1
        out, err, code = (self.dir / f"{self.count}.{kind}" for kind in ("out", "err", "code"))
        # A brace group runs in this shell: a job started with & stays this shell's job (kill %1 reaches it).
        script = f"{{ {command}\n}} > {out} 2> {err}; echo $? > {code}.tmp\n"
        if command.rstrip().endswith("&"):
            script += f"echo $! >> {self.dir / 'background'}\n"
        script += f"mv {code}.tmp {code}\n"
        assert self.shell.stdin is not None
        self.shell.stdin.write(script)
        self.shell.stdin.flush()
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not code.exists():
            if time.monotonic() > deadline or self.shell.poll() is not None:
                raise AssertionError(f"`{command}` did not finish within {COMMAND_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        if (self.dir / "background").exists():
            self.background = [int(pid) for pid in (self.dir / "background").read_text().split()]
        return Ran(command, int(code.read_text()), out.read_text(), err.read_text()), out

    def close(self) -> None:
        for pid in self.background:  # a worker left running by a failed step
            if devstack.is_running(pid):
                os.kill(pid, signal.SIGKILL)
        if self.shell.poll() is None:
            self.shell.kill()
        self.shell.wait(10)
        self.log.close()
        state = self.cwd / ".streamer"
        if (state / "dev.json").exists():
            devstack.down(state)


def user_environment() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "STREAMER_METRICS_PORT": "0",
        "COLUMNS": "120",  # a terminal's width: rich lays its tables out to it
    }


def replay(heading: str, home: Path) -> Session:
    """Run the README's block under ``heading`` in ``home`` as a user would; fail on the first command that exits
    non-zero, prints a traceback or does not print what the README shows."""
    steps = readme_steps((REPO / "README.md").read_text(encoding="utf-8"), heading)
    shutil.copytree(REPO / "models", home / "models")
    shutil.copytree(REPO / "examples", home / "examples", symlinks=False)
    terminal = Terminal(home, user_environment())
    session = Session(home, [])
    background: list[tuple[Step, Path]] = []
    started, first_prediction_s = time.monotonic(), None
    try:
        for step in steps:
            ran, out = terminal.run(step.command)
            deadline = time.monotonic() + RETRY_FOR_S
            while step.command.startswith(READ_ONLY) and (ran.code != 0 or missing_lines(step.expected, ran.text)):
                if time.monotonic() > deadline:
                    break
                time.sleep(1.0)
                ran, out = terminal.run(step.command)
            session.ran.append(ran)
            shown = f"$ {ran.command}\n(exit {ran.code})\n{ran.out}{ran.err}"
            assert ran.code == 0, shown
            assert "Traceback" not in ran.text, shown
            if step.command.startswith("streamer consume") and first_prediction_s is None:
                first_prediction_s = time.monotonic() - started
            if step.command.rstrip().endswith("&"):
                background.append((step, out))  # a background job prints while later steps run
            else:
                assert missing_lines(step.expected, ran.text) == [], shown
        for step, out in background:
            assert missing_lines(step.expected, out.read_text()) == [], f"$ {step.command}\n{out.read_text()}"
        assert not any(devstack.is_running(pid) for pid in terminal.background), "the block leaves a worker running"
    finally:
        terminal.close()
    worker_log = home / "worker.log"
    assert not worker_log.exists() or "Traceback" not in worker_log.read_text()
    if first_prediction_s is not None:
        print(f"\n{heading}: first prediction consumed {first_prediction_s:.1f} s after `streamer dev up` started")
    return session


def check_first_prediction(session: Session) -> None:
    """The prediction of the request the block wrote, with every field of the envelope; the label sent from the
    command line joined it (eval show: 1 label), then the file's 1,000 joined theirs (1,001)."""
    sent = json.loads((session.home / "txn.jsonl").read_text().splitlines()[0])
    prediction = json.loads(session.outputs("streamer consume --count 1")[0].out.splitlines()[0])
    # the envelope's own declaration: its fields in its order, every required one and the topic's latency_ms
    assert list(prediction) == [f.name for f in FIELDS if f.name in prediction], prediction
    assert {f.name for f in FIELDS if f.required or f.topic} <= set(prediction), prediction
    assert prediction["id"] == sent["id"] and prediction["model"] == "fraud" and prediction["version"] == "1"
    assert 0.0 <= prediction["score"] <= 1.0 and prediction["label"] in (0, 1)
    (label,) = [r for r in session.ran if re.match(r"streamer label \S+ \d", r.command)]
    assert f"streamer label {sent['id']} " in label.command and "sent 1 label to feedback" in label.text
    counts = [
        int(re.search(r"│ fraud\s+│ 1\s+│ 5m\s+│ (\d+)", r.out).group(1)) for r in session.outputs("streamer eval")
    ]
    assert counts == [1, 1001], counts
    assert session.outputs("streamer consume | wc -l")[0].out.split() == ["1001"]  # one answer per request


def check_graph(session: Session) -> None:
    """The entity's features as loaded, the graph's prediction enriched from them and decided by its rules, and the
    plain requests answered by the default model."""
    assert json.loads(session.outputs("streamer features get")[0].out) == {"chargebacks_90d": 4.0, "flagged": 0.0}
    prediction = json.loads(session.outputs("streamer consume --count 1")[0].out.splitlines()[0])
    assert prediction["model"] == "fraud-graph" and prediction["enrichment"] == "store", prediction
    assert prediction["decision"] == "review" and prediction["reasons"] == ["three or more chargebacks in 90 days"]
    assert session.outputs("streamer consume | grep")[0].out.split() == ["100"]


BLOCKS: dict[str, Callable[[Session], None]] = {
    "## Your first prediction": check_first_prediction,
    "## Scoring graphs": check_graph,
}


def test_the_first_prediction_block_has_every_step() -> None:
    """dev up to dev down through every step the README promises a newcomer, each command with its output."""
    steps = readme_steps((REPO / "README.md").read_text(encoding="utf-8"), "## Your first prediction")
    commands = [s.command for s in steps]
    assert commands[0] == "streamer dev up" and commands[-1] == "streamer dev down"
    for wanted in ("streamer topics create", "streamer worker", "streamer produce", "streamer consume"):
        assert any(c.startswith(wanted) for c in commands), wanted
    assert any(re.match(r"streamer label \S+ \d", c) for c in commands), "a label sent from the command line"
    assert any(c.startswith("streamer eval show") for c in commands)
    assert all(s.expected for s in steps if s.command.startswith("streamer ") and "dev down" not in s.command)


@pytest.mark.parametrize("heading", list(BLOCKS))
def test_the_readme_block_runs_as_written(heading: str, tmp_path: Path) -> None:
    home = tmp_path / "streamer"
    home.mkdir()
    BLOCKS[heading](replay(heading, home))


@pytest.mark.parametrize(
    ("line", "printed", "matches"),
    [
        ("broker  127.0.0.1:39005  (pid 29437, started)", "broker  127.0.0.1:41234  (pid 7, started)", True),
        ("┃ topic    ┃ partitions ┃", "┃ topic  ┃ partitions ┃", True),
        ("│ fraud │ 1 │ 5m │ 1001 │", "│ fraud │ 1 │ 5m │ 999  │", True),
        ("sent 1 label to feedback", "sent 1 labels to feedback", False),
        ('{"id":"txn-1","model":"fraud"}', '{"id":"txn-1","model":"fraud-online"}', False),
        ("{… abridged …}", "", True),
    ],
)
def test_lines_are_compared_by_their_shape(line: str, printed: str, matches: bool) -> None:
    assert (missing_lines([line], printed) == []) is matches
