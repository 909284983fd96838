"""Comparisons: each a small named object that turns a pair's two values into a level.

Level -1 means a value is missing on either side (no evidence), 0 means the values differ, and
higher levels mean closer agreement; the last level is an exact match. Every level has a human
label, so a match weight can be explained field by field.

Fuzzy scores are computed with rapidfuzz over the distinct value pairs only, in bulk
(``process.cpdist``), never per row in Python.

Why one file of ~500 lines: every comparison the model weighs is declared here, next to the level
kinds it is built from, so that adding or changing one is a change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import polars as pl
from rapidfuzz import process
from rapidfuzz.distance import OSA, JaroWinkler

from cdm_pipeline.standardise.fields import nickname_pairs

NULL_LEVEL = -1
DIFFERENT = 0


def _pair_scores(left: pl.Series, right: pl.Series, scorer, name: str) -> pl.Series:
    """Score each (left, right) with a rapidfuzz scorer, computing each distinct pair once."""
    pairs = pl.DataFrame({"a": left, "b": right})
    todo = pairs.filter(
        pl.col("a").is_not_null() & pl.col("b").is_not_null() & (pl.col("a") != pl.col("b"))
    ).unique()
    if todo.height:
        scores = process.cpdist(todo["a"].to_list(), todo["b"].to_list(), scorer=scorer, workers=-1)
    else:
        scores = np.array([], dtype=np.float64)
    todo = todo.with_columns(score=pl.Series(scores, dtype=pl.Float64))
    return pairs.join(todo, on=["a", "b"], how="left", maintain_order="left")["score"].alias(name)


class HouseholdSharing(Enum):
    """How two people of one household compare on a field (the model's household class)."""

    OWN = "own"  # each has their own, as two strangers do (first name, a national id)
    SHARED = "shared"  # often the same, how often is learnt (surname, address, phone, inbox)
    TWINS = "twins"  # their own, but equal for twins, how often is learnt (birth date)


@dataclass(frozen=True)
class Comparison:
    """A field comparison: ``name`` is the field, ``labels[level]`` describes each level >= 0.

    ``location``: part of where someone lives (street, postal code, city): the model weighs the
    parts together, as one fact (``CombinedComparison``).
    ``household_sharing``: how two members of one household compare on it.
    """

    name: str
    labels: tuple[str, ...]
    tf_adjusted: bool = False
    location: bool = False
    household_sharing: HouseholdSharing = HouseholdSharing.OWN

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ValueError(
                f"{self.name}: a comparison needs at least 'different' and 'exact' levels"
            )

    @property
    def exact_level(self) -> int:
        return len(self.labels) - 1

    def label(self, level: int) -> str:
        return (
            f"{self.name}: missing" if level == NULL_LEVEL else f"{self.name}: {self.labels[level]}"
        )

    def levels(self, left: pl.Series, right: pl.Series) -> pl.Series:
        """Level per pair, as Int8."""
        frame = pl.DataFrame({"l": left, "r": right})
        closeness = self._closeness(frame)
        out = frame.select(
            pl.when(pl.col("l").is_null() | pl.col("r").is_null())
            .then(NULL_LEVEL)
            .when(pl.col("l") == pl.col("r"))
            .then(self.exact_level)
            .otherwise(closeness)
            .cast(pl.Int8)
            .alias(self.name)
        )
        return out[self.name]

    def _closeness(self, frame: pl.DataFrame) -> pl.Series | pl.Expr:
        return pl.lit(DIFFERENT)


@dataclass(frozen=True)
class SimilarityComparison(Comparison):
    """Jaro-Winkler thresholds, one level per threshold (ascending)."""

    thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.thresholds) != len(self.labels) - 2 or list(self.thresholds) != sorted(
            self.thresholds
        ):
            raise ValueError(
                f"{self.name}: one ascending threshold per level between 'different' and 'exact'"
            )
        if any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError(f"{self.name}: thresholds must be in (0, 1)")

    def _closeness(self, frame: pl.DataFrame) -> pl.Series:
        score = _pair_scores(frame["l"], frame["r"], JaroWinkler.normalized_similarity, "score")
        level = pl.lit(DIFFERENT)
        for i, threshold in enumerate(self.thresholds, start=1):
            level = pl.when(pl.col("score") >= threshold).then(i).otherwise(level)
        return pl.DataFrame({"score": score}).select(level.alias("level"))["level"]


@dataclass(frozen=True)
class FirstNameComparison(Comparison):
    """First names: exact, a nickname of each other (Bob/Robert), close spellings, or an initial."""

    def _closeness(self, frame: pl.DataFrame) -> pl.Series:
        score = _pair_scores(frame["l"], frame["r"], JaroWinkler.normalized_similarity, "score")
        nick = frame.join(
            nickname_pairs().with_columns(is_nick=pl.lit(True)),
            left_on=["l", "r"],
            right_on=["name_l", "name_r"],
            how="left",
            maintain_order="left",
        )["is_nick"].fill_null(False)
        initial = ((frame["l"].str.len_chars() == 1) | (frame["r"].str.len_chars() == 1)) & (
            frame["l"].str.slice(0, 1) == frame["r"].str.slice(0, 1)
        )
        # Edits only where they decide the level: the 0.80-0.92 band.
        band = frame.filter((~nick & score.is_between(0.80, 0.92, closed="left")).fill_null(False))
        band = band.select("l", "r").unique()
        band = band.with_columns(_pair_scores(band["l"], band["r"], OSA.distance, "d"))
        edits = frame.join(band, on=["l", "r"], how="left", maintain_order="left")["d"]
        far = frame.filter(~nick & (score.fill_null(1.0) < 0.80))
        typo = frame.join(_nicknames_typed(far), on=["l", "r"], how="left", maintain_order="left")
        typo = typo["typo"].fill_null(False)
        return pl.DataFrame(
            {"score": score, "nick": nick, "initial": initial, "typo": typo, "edits": edits}
        ).select(
            pl.when(pl.col("nick"))
            .then(5)
            .when(pl.col("score") >= 0.92)
            .then(4)
            .when(((pl.col("score") >= 0.80) & (pl.col("edits") <= 2)) | pl.col("typo"))
            .then(3)
            .when(pl.col("initial"))
            .then(1)
            .when(pl.col("score") >= 0.70)
            .then(2)
            .otherwise(DIFFERENT)
            .alias("level")
        )["level"]


# A nickname this short is within one edit of too many other names (Al / Ali, Ed / Eli).
NICKNAME_TYPO_MIN_CHARS = 4


def _nicknames_typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Distinct ``(l, r)`` where one side is a nickname of the other typed with one slip into
    something that is no name: Jakc / John (Jack), Miey / Michael (Mikey), Toy / Anthony (Tony).
    Sara / Carol (Cara) is not: Sara is a name, and a household may hold both. Column ``typo``."""
    names = frame.select("l", "r").unique()
    pairs = nickname_pairs()
    known = pairs["name_l"].unique().implode()
    forms = pairs.filter(pl.col("name_r").str.len_chars() >= NICKNAME_TYPO_MIN_CHARS)
    found = []
    for name, other in (("l", "r"), ("r", "l")):
        candidates = names.join(forms, left_on=name, right_on="name_l").filter(
            (pl.col("name_r").str.len_chars() - pl.col(other).str.len_chars()).abs() <= 1,
            ~pl.col(other).is_in(known),
        )
        distance = _pair_scores(candidates["name_r"], candidates[other], OSA.distance, "d")
        found.append(candidates.filter(distance.fill_null(0) <= 1).select("l", "r"))
    return pl.concat(found).unique().with_columns(typo=pl.lit(True))


@dataclass(frozen=True)
class EditComparison(Comparison):
    """Exact, within one edit (a typo: one character inserted, dropped, changed, or two
    neighbours swapped) or a shared part (``prefix3``/``suffix7``), and with more labels, one
    level per further edit allowed (two edits: 6531276 / 6539267)."""

    part: str = "none"

    def _closeness(self, frame: pl.DataFrame) -> pl.Series:
        distance = _pair_scores(frame["l"], frame["r"], OSA.distance, "d")
        if self.part == "suffix7":
            shared = frame["l"].str.slice(-7) == frame["r"].str.slice(-7)
        elif self.part == "prefix3":
            shared = frame["l"].str.slice(0, 3) == frame["r"].str.slice(0, 3)
        else:
            shared = pl.Series([False] * frame.height, dtype=pl.Boolean)
        level = pl.lit(DIFFERENT)
        for edits in range(self.exact_level - 1, 0, -1):
            level = pl.when(pl.col("d") <= edits).then(self.exact_level - edits).otherwise(level)
        level = pl.when(pl.col("shared")).then(self.exact_level - 1).otherwise(level)
        return pl.DataFrame({"d": distance, "shared": shared}).select(level.alias("level"))["level"]


@dataclass(frozen=True)
class DateComparison(Comparison):
    """Dates: exact, or one slip (day/month swapped, only one of year/month/day differs, or one
    typed digit changed or two swapped: 1951-06-12 / 1915-06-12)."""

    def levels(self, left: pl.Series, right: pl.Series) -> pl.Series:
        frame = pl.DataFrame({"l": left, "r": right})
        left_date, right_date = pl.col("l"), pl.col("r")
        same = (
            (left_date.dt.year() == right_date.dt.year()).cast(pl.Int8)
            + (left_date.dt.month() == right_date.dt.month()).cast(pl.Int8)
            + (left_date.dt.day() == right_date.dt.day()).cast(pl.Int8)
        )
        swapped = (
            (left_date.dt.year() == right_date.dt.year())
            & (left_date.dt.month() == right_date.dt.day())
            & (left_date.dt.day() == right_date.dt.month())
        )
        typed = _pair_scores(
            frame["l"].dt.to_string("%Y%m%d"), frame["r"].dt.to_string("%Y%m%d"), OSA.distance, "d"
        )
        frame = frame.with_columns(typo=typed <= 1)
        return frame.select(
            pl.when(left_date.is_null() | right_date.is_null())
            .then(NULL_LEVEL)
            .when(left_date == right_date)
            .then(self.exact_level)
            .when(swapped | (same == 2) | pl.col("typo"))
            .then(1)
            .otherwise(DIFFERENT)
            .cast(pl.Int8)
            .alias(self.name)
        )[self.name]


@dataclass(frozen=True)
class CombinedComparison(Comparison):
    """Fields that describe one fact, compared as one: where someone lives. The level is the
    most specific part that agrees (a street before a postal code before a town), so a move that
    changes all three is one disagreement, not three, and a shared street is not counted again
    in its postal code and town. The parts keep their own levels, for explanation; the model
    weighs only this one. Labels are made from the parts' (``combined_labels``)."""

    parts: tuple[Comparison, ...] = ()

    def combine(self, part_levels: dict[str, pl.Series]) -> pl.Series:
        """The combined level from the parts' levels (most specific part first in ``parts``)."""
        frame = pl.DataFrame({c.name: part_levels[c.name] for c in self.parts})
        level = pl.when(pl.all_horizontal(pl.col(c.name) == NULL_LEVEL for c in self.parts)).then(
            NULL_LEVEL
        )
        for offset, part in zip(self._offsets(), self.parts, strict=True):
            agrees = pl.col(part.name) > DIFFERENT
            level = level.when(agrees).then(offset + pl.col(part.name))
        level = level.otherwise(DIFFERENT)
        return frame.select(level.cast(pl.Int8).alias(self.name))[self.name]

    def part_level(self, level: int) -> tuple[Comparison, int] | None:
        """The part and its level that a combined level stands for (None: nothing agrees)."""
        for offset, part in zip(self._offsets(), self.parts, strict=True):
            if offset < level <= offset + part.exact_level:
                return part, level - offset
        return None

    def _offsets(self) -> list[int]:
        """Combined level = offset + part level: least specific part lowest."""
        offsets, total = [], 0
        for part in reversed(self.parts):
            offsets.append(total)
            total += part.exact_level
        return offsets[::-1]


def combined_labels(parts: tuple[Comparison, ...]) -> tuple[str, ...]:
    """ "nothing agrees", then each part's agreeing levels, least specific part first."""
    labels = ["nothing agrees"]
    for part in reversed(parts):
        labels += [f"{part.name}: {label}" for label in part.labels[1:]]
    return tuple(labels)


def model_comparisons(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons the model weighs: parts of a combined comparison are weighed in it."""
    return [c for c in comparisons if not c.location]


def default_comparisons() -> list[Comparison]:
    """The comparisons the resolver uses, by the standardised field each reads."""
    location = (
        SimilarityComparison(
            "street_key",
            ("different", "Jaro-Winkler >= 0.88", "exact"),
            thresholds=(0.88,),
            location=True,
        ),
        EditComparison(
            "postal_code",
            ("different", "same first 3 characters", "exact"),
            part="prefix3",
            location=True,
        ),
        SimilarityComparison(
            "city_key",
            ("different", "Jaro-Winkler >= 0.90", "exact"),
            thresholds=(0.90,),
            location=True,
        ),
    )
    return [
        FirstNameComparison(
            "first_name_key",
            (
                "different",
                "initial only",
                "Jaro-Winkler >= 0.70",
                "Jaro-Winkler >= 0.80 within two edits, or a nickname typed with one slip",
                "Jaro-Winkler >= 0.92",
                "nickname",
                "exact",
            ),
            tf_adjusted=True,
        ),
        SimilarityComparison(
            "last_name_key",
            ("different", "Jaro-Winkler >= 0.80", "Jaro-Winkler >= 0.92", "exact"),
            tf_adjusted=True,
            thresholds=(0.80, 0.92),
            household_sharing=HouseholdSharing.SHARED,
        ),
        # No fuzzy email level: "amber.davis@" at two providers is two people as often as one.
        Comparison("email_norm", ("different", "exact"), household_sharing=HouseholdSharing.SHARED),
        EditComparison(
            "phone_e164",
            ("different", "last 7 digits or one edit", "exact"),
            part="suffix7",
            household_sharing=HouseholdSharing.SHARED,
        ),
        DateComparison(
            "birth_date",
            ("different", "day/month swapped or one part differs", "exact"),
            household_sharing=HouseholdSharing.TWINS,
        ),
        # Ids the customer gave (national id, loyalty number): a typed id with one or two slips
        # is the same id far more often than another person's (how often: learnt per level).
        EditComparison(
            "identifier_key",
            ("different", "two edits", "one edit or two digits swapped", "exact"),
        ),
        *location,
        CombinedComparison(
            "location",
            combined_labels(location),
            parts=location,
            household_sharing=HouseholdSharing.SHARED,
        ),
    ]


def compare_pairs(
    pairs: pl.DataFrame,
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    chunk_size: int = 1_000_000,
) -> pl.DataFrame:
    """Levels of every comparison for each pair (``id_l``, ``id_r``), in the pairs' order.

    Pairs are compared a chunk at a time: the levels are one byte per field, but the joined text
    of both sides is not, and at a million people it would not all fit at once.
    """
    fields = compared_fields(comparisons)
    side = profiles.select("profile_id", *fields)
    if pairs.height < side.height // 4:  # a night's few pairs: sort only the profiles they name
        named = pl.concat([pairs["id_l"], pairs["id_r"]]).unique()
        side = side.filter(pl.col("profile_id").is_in(named.implode()))
    if not side["profile_id"].is_sorted():
        side = side.sort("profile_id")
    if pairs.height <= chunk_size:
        return _compare_chunk(pairs, side, comparisons)
    chunks = range(0, pairs.height, chunk_size)
    return pl.concat(
        [_compare_chunk(pairs.slice(start, chunk_size), side, comparisons) for start in chunks]
    )


def compared_fields(comparisons: list[Comparison]) -> list[str]:
    """The profile columns the comparisons read (a combined comparison reads its parts')."""
    return [c.name for c in comparisons if not isinstance(c, CombinedComparison)]


SWAP_SIMILARITY = 0.88


def _names_swapped(joined: pl.DataFrame) -> pl.Series:
    """First and last name entered the wrong way round, typos and nicknames allowed (Deborah Ball
    / Ball Deboah, Charles Spencer / Spencer Chuck): each name is close to (or a nickname of) the
    other side's other name and not to its own. Only pairs with one crossing initial are scored,
    so this costs little."""
    first, last = pl.col("first_name_key"), pl.col("last_name_key")
    first_r, last_r = pl.col("first_name_key_r"), pl.col("last_name_key_r")
    crossing = (
        (
            (first.str.slice(0, 1) == last_r.str.slice(0, 1))
            | (last.str.slice(0, 1) == first_r.str.slice(0, 1))
        )
        & (first != first_r)
        & (first != last)
    ).fill_null(False)
    candidates = joined.with_row_index("row").filter(crossing)
    swapped = pl.repeat(False, joined.height, dtype=pl.Boolean, eager=True)
    if candidates.height == 0:
        return swapped
    jw = JaroWinkler.normalized_similarity
    nicknames = nickname_pairs().with_columns(nick=pl.lit(True))

    def score(a: str, b: str, nickname_aware: bool = False) -> pl.Series:
        similarity = _pair_scores(candidates[a], candidates[b], jw, "s").fill_null(1.0)
        if not nickname_aware:
            return similarity
        nick = (
            candidates.select(a, b)
            .join(
                nicknames,
                left_on=[a, b],
                right_on=["name_l", "name_r"],
                how="left",
                maintain_order="left",
            )["nick"]
            .fill_null(False)
        )
        return pl.select(pl.when(nick).then(1.0).otherwise(similarity)).to_series()

    cross = score("first_name_key", "last_name_key_r", nickname_aware=True) + score(
        "last_name_key", "first_name_key_r", nickname_aware=True
    )
    direct = score("first_name_key", "first_name_key_r", nickname_aware=True) + score(
        "last_name_key", "last_name_key_r"
    )
    rows = candidates["row"].filter((cross >= 2 * SWAP_SIMILARITY) & (cross > direct))
    return swapped.scatter(rows.to_numpy().astype(np.int64), True)


def _lone_names_placed(joined: pl.DataFrame) -> pl.DataFrame:
    """A record whose only name, in the first-name box, is the other record's surname is
    compared as a surname: "Scott" (no surname) against "Debra Scott" is a surname that agrees
    and a first name that is unknown, not a first name that differs. (A lone name in the
    surname box is left where it is: against "Wolfe Gregory" it may be the other record whose
    names are the wrong way round.)"""
    out = {}
    for side, other in (("", "_r"), ("_r", "")):
        first, last = pl.col(f"first_name_key{side}"), pl.col(f"last_name_key{side}")
        first_o, last_o = pl.col(f"first_name_key{other}"), pl.col(f"last_name_key{other}")
        surname = (
            last.is_null() & (first == last_o) & first_o.is_not_null() & (first != first_o)
        ).fill_null(False)
        out[f"first_name_key{side}"] = pl.when(surname).then(None).otherwise(first)
        out[f"last_name_key{side}"] = pl.when(surname).then(first).otherwise(last)
    return joined.with_columns(**out)


def _compare_chunk(
    pairs: pl.DataFrame, side: pl.DataFrame, comparisons: list[Comparison]
) -> pl.DataFrame:
    """Swapped first/last names (John Smith vs Smith John) are compared after swapping back.
    ``side`` is sorted by profile id, so each pair's two rows are found by binary search and
    gathered, which is several times faster than two hash joins."""
    fields = compared_fields(comparisons)
    ids = side["profile_id"].to_numpy()
    values = side.select(fields)
    left = values[np.searchsorted(ids, pairs["id_l"].to_numpy())]
    right = values[np.searchsorted(ids, pairs["id_r"].to_numpy())]
    joined = pl.concat([pairs, left, right.rename({f: f"{f}_r" for f in fields})], how="horizontal")
    if "first_name_key" in fields and "last_name_key" in fields:
        swapped = _names_swapped(joined)
        joined = joined.with_columns(
            pl.when(swapped)
            .then(pl.col("last_name_key_r"))
            .otherwise(pl.col("first_name_key_r"))
            .alias("first_name_key_r"),
            pl.when(swapped)
            .then(pl.col("first_name_key_r"))
            .otherwise(pl.col("last_name_key_r"))
            .alias("last_name_key_r"),
        )
        joined = _lone_names_placed(joined)
    levels = {}
    for c in comparisons:
        if isinstance(c, CombinedComparison):
            levels[c.name] = c.combine(levels)
        else:
            levels[c.name] = c.levels(joined[c.name], joined[f"{c.name}_r"])
    kept = [c for c in ("id_l", "id_r", "blocking_rule") if c in pairs.columns]
    return pairs.select(kept).with_columns(**{f"{n}_level": s for n, s in levels.items()})
