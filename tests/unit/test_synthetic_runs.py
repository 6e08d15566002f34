"""Synthetic traffic: the same seed gives the same requests, each run its own ids, and the labels of a run are
the ground truth of exactly its requests (``streamer.synthetic``)."""

from __future__ import annotations

import json

from streamer import synthetic


def bodies(run: str | None, seed: int = 1) -> list[tuple[bytes | None, dict]]:
    return [(m.key, json.loads(m.value)) for m in synthetic.synthetic_requests(50, keys=7, seed=seed, run=run)]


def test_the_same_seed_is_the_same_traffic_with_ids_unique_per_run() -> None:
    first, second = bodies(None), bodies(None)
    assert [(k, b["features"]) for k, b in first] == [(k, b["features"]) for k, b in second]
    ids_first, ids_second = {b["id"] for _, b in first}, {b["id"] for _, b in second}
    assert len(ids_first) == 50 and not ids_first & ids_second
    assert all(b["id"].startswith("r-1-") for _, b in first)


def test_a_run_token_is_kept_and_an_empty_one_gives_the_old_ids() -> None:
    assert [b["id"] for _, b in bodies("abc")[:2]] == ["r-1-abc-0", "r-1-abc-1"]
    assert [b["id"] for _, b in bodies("")[:2]] == ["r-1-0", "r-1-1"]


def test_the_labels_of_a_run_match_its_requests_and_the_hidden_rule() -> None:
    requests = bodies("tok", seed=3)
    labels = list(synthetic.synthetic_labels(50, keys=7, seed=3, run="tok"))
    assert [(line["key"].encode(), line["value"]["id"]) for line in labels] == [(k, b["id"]) for k, b in requests]
    expected = synthetic.labels(synthetic.transactions(50, seed=3), seed=3)
    assert [line["value"]["label"] for line in labels] == expected.tolist()
