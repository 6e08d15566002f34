"""Which model version serves a request (contract sections 2 and 6), and which one shadows it.

A request names its model in its ``model`` field, else in the ``streamer-model`` header, else gets the
default: the configured one, or the only model in the repository. ``name@version`` means exactly that version.
A bare ``name`` means what the model's ``Serving`` policy says:

- the **champion** (``champion``, the one place this rule is written): the pinned version if it is loaded,
  else the highest loaded version;
- unless a **canary** split is set: each version of the split gets the share of keys its weight says, by a
  hash of the request key (of the id for a null key) seeded with the model name, so the same key always gets
  the same version while the weights stay, and raising a canary's weight only moves keys *to* it (the newest
  version takes the lowest hash range);
- a **shadow** (challenger) also scores every row the champion scores, in the same batch; its outputs never
  go to the predictions topic.

Anything that does not resolve is an ``unknown-model`` dead letter. A version named by a policy but not loaded
(removed, refused) is ignored: the split falls back to its loaded versions, then to the champion.

Pure and immutable: the worker swaps a whole new ``Catalog`` between batches (hot reload, a promotion), so a
batch is routed by exactly one policy.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core.cards import ModelCard
from streamer.core.errors import UNKNOWN_MODEL, DecodeError

# The MurmurHash3 64-bit finaliser (fmix64): a bijection of uint64 whose every output bit depends on every input
# bit, so keys whose CRC-32s differ in a structured way (sequential ids) land at independent-looking places.
_FMIX_SHIFT = np.uint64(33)
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SEED_SHIFT = np.uint64(32)
_MANTISSA_SHIFT = np.uint64(64 - 53)
_UNIT = 1.0 / float(1 << 53)


@dataclass(frozen=True, slots=True)
class Serving:
    """How a bare model name is served. ``canary``: (version, weight) pairs, weights > 0 (normalised over the
    loaded versions); ``shadow``: the challenger version. Empty policy = the highest version, no shadow."""

    pin: int | None = None
    canary: tuple[tuple[int, float], ...] = ()
    shadow: int | None = None

    def describe(self) -> dict[str, object]:
        return {"pin": self.pin, "canary": {str(v): w for v, w in self.canary}, "shadow": self.shadow}


def champion(versions: Collection[int], pin: int | None) -> int | None:
    """The version a bare model name serves: ``pin`` if it is among ``versions``, else the highest; None when
    there is none. Every serving mode and every command that shows the serving version calls this."""
    if not versions:
        return None
    return pin if pin in versions else max(versions)


def key_fractions(name: str, keys: Sequence[bytes]) -> np.ndarray:
    """Where each key falls in [0, 1) for model ``name`` (float64, one per key): stable across processes, runs
    and platforms.

    A CRC-32 of the key (one C call per key, no Python frame) sits in the low 32 bits of a uint64 and the CRC-32
    of the model name in the high 32; the whole batch then goes through fmix64 in numpy, and the top 53 bits
    become the fraction. The CRC alone is not enough: it is linear, so sequential ids (``cust-00000``...) fall
    in structured places and a 10 % canary got 13.5 % of 1,000 of them. Distinct (name, key CRC) pairs map to
    distinct 64-bit values, so two keys share a place only when their CRC-32s collide.
    """
    seed = np.uint64(zlib.crc32(name.encode())) << _SEED_SHIFT
    h = np.fromiter(map(zlib.crc32, keys), dtype=np.uint64, count=len(keys)) | seed
    h ^= h >> _FMIX_SHIFT
    h *= _FMIX_1
    h ^= h >> _FMIX_SHIFT
    h *= _FMIX_2
    h ^= h >> _FMIX_SHIFT
    return (h >> _MANTISSA_SHIFT).astype(np.float64) * _UNIT


def key_fraction(name: str, key: bytes) -> float:
    """Where one ``key`` falls in [0, 1) for model ``name``: ``key_fractions`` of one key."""
    return float(key_fractions(name, [key])[0])


@dataclass(frozen=True, slots=True)
class Split:
    """A canary split over loaded versions: ``cards[k]`` serves fractions in [bounds[k-1], bounds[k])."""

    name: str
    cards: tuple[ModelCard, ...]
    bounds: tuple[float, ...]

    def assign(self, keys: Sequence[bytes | None], ids: Sequence[str]) -> list[int]:
        """Index into ``cards`` for each request (key, else id)."""
        if None in keys:  # a null key places its request by the id
            keys = [key if key is not None else ids[i].encode() for i, key in enumerate(keys)]
        fractions = key_fractions(self.name, keys)  # type: ignore[arg-type]
        return np.searchsorted(np.asarray(self.bounds), fractions, side="right").tolist()


@dataclass(frozen=True, slots=True)
class Catalog:
    cards: Mapping[str, Mapping[int, ModelCard]]
    default: str | None = None
    pins: Mapping[str, int] = field(default_factory=dict)
    serving: Mapping[str, Serving] = field(default_factory=dict)
    # Declared scoring graphs by ``name@version``; their cards (``graph_card``) sit in ``cards`` like models'.
    graphs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_name(self) -> str | None:
        if self.default is not None:
            return self.default
        return next(iter(self.cards)) if len(self.cards) == 1 else None

    def policy(self, name: str) -> Serving:
        policy = self.serving.get(name)
        if policy is not None:
            return policy
        pin = self.pins.get(name)
        return Serving(pin=pin) if pin is not None else Serving()

    def serving_version(self, name: str) -> int | None:
        """The champion: the pinned version if loaded, else the highest."""
        versions = self.cards.get(name)
        return champion(versions, self.policy(name).pin) if versions else None

    def loaded(self) -> list[tuple[str, int, bool]]:
        """(name, version, is the champion) of every loaded version."""
        return [
            (name, version, self.serving_version(name) == version)
            for name, versions in self.cards.items()
            for version in versions
        ]

    def shares(self) -> list[tuple[str, int, str, float]]:
        """(name, version, role, share) of what serves traffic: the champion and canaries with their share of
        keys (summing to 1 per model), a shadow with 1.0 (it scores every request of the champion's)."""
        shares = []
        for name, versions in self.cards.items():
            split = self.split(name)
            serving = self.serving_version(name)
            if split is None:
                shares.append((name, serving, "champion", 1.0))
            else:
                lows = (0.0, *split.bounds)
                highs = (*split.bounds, 1.0)
                for card, low, high in zip(split.cards, lows, highs, strict=True):
                    shares.append((name, card.version, "champion" if card.version == serving else "canary", high - low))
            challenger = self.shadow_of(versions[serving])  # type: ignore[index]
            if challenger is not None:
                shares.append((name, challenger.version, "shadow", 1.0))
        return shares  # type: ignore[return-value]

    def split(self, name: str) -> Split | None:
        """The canary split of ``name`` over its loaded versions, or None (the champion serves every key).

        A canary's weight is its share of keys; the champion takes what the others leave (all of it when their
        weights sum to 1 or more, the weights are normalised and the champion gets none unless listed).
        """
        versions = self.cards.get(name)
        canary = self.policy(name).canary
        if not versions or not canary:
            return None
        champion = self.serving_version(name)
        shares = {v: w for v, w in canary if v in versions and w > 0}
        rest = 1.0 - sum(w for v, w in shares.items() if v != champion)
        if rest > 0:
            shares[champion] = shares.get(champion, 0.0) + rest  # type: ignore[index]
        if len(shares) < 2 and champion in shares:
            return None
        ordered = sorted(shares.items(), reverse=True)  # newest first: a growing canary only takes keys
        total = sum(shares.values())
        bounds, running = [], 0.0
        for _, weight in ordered[:-1]:
            running += weight / total
            bounds.append(running)
        return Split(name, tuple(versions[v] for v, _ in ordered), tuple(bounds))

    def shadow_of(self, card: ModelCard) -> ModelCard | None:
        """The challenger scoring beside ``card`` when ``card`` is its model's champion, else None."""
        versions = self.cards.get(card.name)
        challenger = self.policy(card.name).shadow
        if not versions or challenger is None or challenger not in versions or challenger == card.version:
            return None
        return versions[challenger] if self.serving_version(card.name) == card.version else None

    def route(self, requested: str | None) -> ModelCard | Split:
        """The card that serves ``requested``, or the split that decides per key (a bare name with a canary)."""
        name = requested or self.default_name
        if name is not None and "@" not in name:
            split = self.split(name)
            if split is not None:
                return split
        return self.resolve(requested)

    def resolve(self, requested: str | None) -> ModelCard:
        """The one version a model string names; a bare name gives the champion (canary splits aside)."""
        if requested is None or requested == "":
            requested = self.default_name
            if requested is None:
                names = ", ".join(sorted(self.cards)) or "none"
                raise DecodeError(
                    UNKNOWN_MODEL, f"the request names no model and there is no default (models: {names})"
                )
        name, at, version_text = requested.partition("@")
        versions = self.cards.get(name)
        if not versions:
            raise DecodeError(UNKNOWN_MODEL, f"no model named {name!r}")
        if not at:
            version = self.serving_version(name)
            assert version is not None
            return versions[version]
        if not version_text.isdigit() or int(version_text) not in versions:
            raise DecodeError(UNKNOWN_MODEL, f"model {name!r} has no version {version_text!r}")
        return versions[int(version_text)]

    def with_cards(self, cards: Mapping[str, Mapping[int, ModelCard]]) -> Catalog:
        """The same policy over other model cards (hot reload); the graphs' cards stay."""
        graph_cards = {ref.partition("@")[0]: self.cards[ref.partition("@")[0]] for ref in self.graphs}
        return Catalog({**cards, **graph_cards}, self.default, self.pins, self.serving, self.graphs)

    def with_serving(self, serving: Mapping[str, Serving]) -> Catalog:
        return Catalog(self.cards, self.default, self.pins, serving, self.graphs)
