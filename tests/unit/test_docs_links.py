"""The documentation stands on its own in the repository.

- Every relative Markdown link in README.md, CHANGELOG.md and docs/*.md resolves to a file or directory inside
  the repository, and a ``#anchor`` to a heading of the target (GitHub's heading slugs).
- Every alert rule shipped under deploy/prometheus/rules/ has a runbook entry in docs/operations.md: a heading
  that is the alert's name.
- The docs name what the code has: every ``STREAMER_*`` variable the package reads is in docs/configuration.md,
  every metric the worker exports and every command of ``streamer`` is in docs/contract.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *DOCS.glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target), target up to the first space (an optional "title" may follow).
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def without_code(text: str) -> str:
    """The text outside fenced blocks and code spans (a link written as code is not a link)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a page; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[str]:
    prose = without_code(text)
    return _LINK.findall(prose) + _REFERENCE.findall(prose)


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    """Each relative link of ``page`` that does not resolve, with the reason."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for target in links(text):
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{target}: a root-relative link (write it relative to {page.name})")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.is_relative_to(repo.resolve()):
            problems.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(repo.resolve())}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert page.exists(), f"{page.relative_to(REPO)} is missing"
    assert broken_links(page) == []


def test_the_link_check_catches_what_it_should(tmp_path: Path) -> None:
    """The checker itself, on a page with one link of each kind (so that an empty result above means something)."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "other.md").write_text("# Other page\n\n## Why `exactly once` holds: *here*\n")
    (tmp_path / "outside.md").write_text("# Outside\n")  # exists, but not in the repository
    page = repo / "README.md"
    page.write_text(
        "# Title\n\n## Same page\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#why-exactly-once-holds-here) [ok](#same-page) [ok](docs/)\n"
        "[ok](https://example.com/x.md) `[code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n"
        "[bad](missing.md) [bad](docs/other.md#no-such-heading) [bad](#nowhere) [bad](../outside.md)\n"
        "[bad](/docs/other.md)\n\n[ref]: docs/gone.md\n"
    )
    problems = broken_links(page, repo=repo)
    assert [p.rsplit(": ", 1)[0] for p in problems] == [
        "missing.md",
        "docs/other.md#no-such-heading",
        "#nowhere",
        "../outside.md",
        "/docs/other.md",
        "docs/gone.md",
    ], problems
    assert "outside the repository" in problems[3]
    assert broken_links(repo / "docs" / "other.md", repo=repo) == []


def test_github_heading_slugs() -> None:
    assert slug("Offline scoring: `streamer batch`") == "offline-scoring-streamer-batch"
    assert slug("`[rollout.NAME]`: label-driven rollouts") == "rolloutname-label-driven-rollouts"
    assert slug("Entity features (enrichment)") == "entity-features-enrichment"
    assert anchors("# A\n## A\n## A\n") == {"a", "a-1", "a-2"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_table_cell_is_split_by_a_pipe_inside_code(page: Path) -> None:
    """GitHub splits a table row at every unescaped ``|``, also inside a code span: the cell breaks."""
    rows = [line for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines() if line.startswith("|")]
    split = [span for row in rows for span in re.findall(r"`[^`]*`", row) if re.search(r"(?<!\\)\|", span)]
    assert split == [], f"{page.relative_to(REPO)}: write these without a bare | (or as \\|): {split}"


# ------------------------------------------------------------------------------------------------ runbook


def alert_names() -> list[str]:
    names = []
    for rules in sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml")):
        document = yaml.safe_load(rules.read_text())
        if not isinstance(document, dict) or "groups" not in document:
            continue  # promtool unit tests (streamer_test.yml), not rules
        for group in document["groups"]:
            names.extend(rule["alert"] for rule in group.get("rules", []) if "alert" in rule)
    return names


def test_every_alert_rule_has_a_runbook_entry() -> None:
    names = alert_names()
    assert names, "no alert rules found under deploy/prometheus/rules/"
    headings = {heading.strip("` ") for _, heading in _HEADING.findall((DOCS / "operations.md").read_text())}
    missing = [name for name in names if name not in headings]
    assert missing == [], f"alert rules without a runbook entry (a heading '### NAME') in docs/operations.md: {missing}"


# ------------------------------------------------------------------------------------------------ coverage


def test_every_environment_variable_is_documented() -> None:
    read = set()
    for module in (REPO / "streamer").rglob("*.py"):
        # as written in a string or a docstring ("STREAMER_X", ``STREAMER_X``), not a Python name
        read.update(re.findall(r"(?<=[\"'`])STREAMER_[A-Z0-9_]*[A-Z0-9]\b", module.read_text(encoding="utf-8")))
    documented = (DOCS / "configuration.md").read_text()
    missing = sorted(v for v in read if not re.search(rf"\b{v}\b", documented))
    assert read and missing == [], f"STREAMER_* variables not in docs/configuration.md: {missing}"


def exported_metrics() -> set[str]:
    from streamer.adapters.prometheus_metrics import WorkerMetrics

    names = set()
    for family in WorkerMetrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    # metrics defined outside the worker's registry (other servers): their constructor calls
    for module in (REPO / "streamer").rglob("*.py"):
        source = module.read_text(encoding="utf-8")
        names.update(re.findall(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(streamer_\w+)\"", source))
    return names


def test_every_exported_metric_is_documented() -> None:
    names = exported_metrics()
    documented = (DOCS / "contract.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in documented)
    assert names and missing == [], f"metrics not in docs/contract.md (as `name`): {missing}"


def test_every_command_is_documented() -> None:
    import typer.main

    from streamer.cli import app

    def leaves(command, path):  # type: ignore[no-untyped-def]
        children = getattr(command, "commands", None)
        if not children:
            yield path
            return
        for name, child in children.items():
            yield from leaves(child, [*path, name])

    lines = (DOCS / "contract.md").read_text().splitlines()
    missing = []
    for path in leaves(typer.main.get_command(app), []):
        group, name = (path[0], path[-1]) if len(path) > 1 else (path[0], None)
        if not any(
            re.search(rf"streamer {re.escape(group)}\b", line)
            and (name is None or re.search(rf"\b{re.escape(name)}\b", line))
            for line in lines
        ):
            missing.append(" ".join(path))
    assert missing == [], f"commands not in docs/contract.md: {missing}"
