"""What one feature value is to a model: THE per-value rules, shared by the row path and the column path.

The row path (``features.build_matrix``: requests decoded from JSON, the stream's and ``streamer batch``'s JSONL)
and the column path (``columns.feature_matrix``: CSV and Parquet cells, ``streamer batch``) apply these
functions, so that a value gets one outcome and one dead-letter reason and detail whichever way it came:

- a feature the card lists but the request lacks is ``schema``;
- a missing value (JSON ``null``; an empty cell, NaN) is NaN for a card with ``allow_missing``, else
  ``non-finite``;
- text is the index of its category for a feature the card declares categorical; an unseen category is a
  missing value (above) with ``allow_missing``, else ``schema``; text for any other feature is ``schema``;
- a number float32 can't hold (|x| > 3.4e38) is ``non-finite`` for its request.

Before these, the decoder's own rules (``requests``): a value of a type no request holds (a boolean, a list) is
``schema`` and a number beyond float64 (``1e999``) is ``non-finite``. The JSON decoder applies them to requests;
``columns.decoder_errors`` applies them to cells, with the details below. A property test holds the two paths
equal on random tables (``tests/property/test_decode_rules_agree.py``).

A rule returns the value's float or the ``DecodeError`` to report, so the row path can raise it and the column
path can apply it to a whole column's mask at once.
"""

from __future__ import annotations

from streamer.core.cards import ModelCard
from streamer.core.errors import NON_FINITE, SCHEMA, DecodeError

NAN = float("nan")


def missing_feature(card: ModelCard, name: str) -> DecodeError:
    """A feature the card lists is absent from the request (or the table has no such column)."""
    return DecodeError(SCHEMA, f"feature {name!r} is missing (model {card.ref})")


def missing_value(card: ModelCard, name: str) -> float | DecodeError:
    """A null (or empty, or NaN) value: NaN for a card that takes missing values, else ``non-finite``."""
    if card.allow_missing:
        return NAN
    return DecodeError(NON_FINITE, f"feature {name!r} is null and model {card.ref} takes no missing values")


def text_value(card: ModelCard, name: str, text: str) -> float | DecodeError:
    """A string: its category's index, a missing value for an unseen category, or ``schema``."""
    categories = card.categorical.get(name)
    if categories is None:
        return DecodeError(SCHEMA, f"feature {name!r} is a string but not categorical in model {card.ref}")
    try:
        return float(categories.index(text))
    except ValueError:
        if card.allow_missing:
            return NAN
        return DecodeError(SCHEMA, f"feature {name!r} has unknown category {text!r} (model {card.ref})")


def beyond_float32(card: ModelCard) -> DecodeError:
    """A request with a value float32 can't hold (the model takes float32)."""
    return DecodeError(NON_FINITE, f"a feature is beyond float32 range ({card.ref})")


def wrong_type(name: str, type_name: str) -> DecodeError:
    """A cell of a type no request can hold, worded as the JSON decoder words ``true`` in ``features``."""
    return DecodeError(SCHEMA, f"Expected `float | str | null`, got `{type_name}` - at `$.features[...]` ({name!r})")


def beyond_float64(name: str) -> DecodeError:
    """A number float64 can't hold (``1e999``), as the JSON decoder reports it in ``features``."""
    return DecodeError(NON_FINITE, f"a number is out of float64 range (feature {name!r})")
