"""The partition rule of streamer's topics, and what to do when the topics break it.

A prediction or dead letter goes to its request's partition *number*: that is what keeps per-key order end to
end whatever partitioner the producers use. So the request, predictions and dead-letter topics need the same
partition count, and the request topic's is the one that counts (producers wrote into it; the outputs can be
made again). This module owns the rule and the advice; ``streamer topics create`` and the worker's start both
say it with these words.

Invariants:

- ``disagreeing`` lists exactly the topics whose count differs from ``target`` (in the order given);
- ``repair`` always names the commands that fix it: delete the disagreeing topics, create them again with the
  target count -- and, on Apache Kafka, the alternative of raising a count (it can never be lowered).
"""

from __future__ import annotations

from collections.abc import Mapping


def disagreeing(counts: Mapping[str, int], target: int) -> list[str]:
    """The topics of ``counts`` whose partition count is not ``target``."""
    return [name for name, count in counts.items() if count != target]


def describe(counts: Mapping[str, int]) -> str:
    """``requests=4, predictions=8``: the counts as a line shows them."""
    return ", ".join(f"{name}={count}" for name, count in counts.items())


def repair(counts: Mapping[str, int], target: int, create: str = "streamer topics create") -> str:
    """How to bring every topic of ``counts`` to ``target`` partitions: the commands, in order.

    ``create`` is the command that creates them again (by default the whole set, which takes the request
    topic's count)."""
    wrong = disagreeing(counts, target)
    names = " ".join(wrong)
    raise_hint = ", ".join(n for n in wrong if counts[n] < target)
    alternative = (
        f"; on Apache Kafka, `kafka-topics.sh --alter --partitions {target}` can raise {raise_hint} instead"
        if raise_hint
        else ""
    )
    return (
        f"delete {'it' if len(wrong) == 1 else 'them'} and create {'it' if len(wrong) == 1 else 'them'} again with "
        f"{target}: `streamer topics delete {names} --yes` (their records are lost), then `{create} "
        f"--partitions {target}`{alternative}"
    )
