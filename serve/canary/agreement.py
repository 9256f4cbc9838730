"""How far a canary agrees with stable on the same requests (shadow traffic), per pair of
versions: a new index or embedder can answer every request with 200 and still return other
documents, which no error rate or latency gate sees.

Search: overlap@k of the two top-k lists, and the rank correlation of the ids both returned.
The correlation is Kendall's tau: on the handful of common ids a top-10 list leaves, it reads as
"the share of id pairs both versions order alike, minus the share they swap", one swapped
neighbour pair costs the same wherever it is, and no ties can occur (an id has one position in a
list), so tau-a and tau-b coincide. Spearman's rho squares rank distances instead, which makes
one far displacement weigh as much as many near ones.

LLM: the exact-match rate of greedy (temperature 0) answers, which should be identical when only
the serving changed, and the mean ratio of answer lengths (canary / stable, in characters),
which shows a model that got terse or rambling even when no answer matches.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The k of the overlap gate (GateConfig.min_overlap_at_10): shadow pairs are compared at it.
OVERLAP_K = 10


def _unique(ids: Sequence[Hashable]) -> list[Hashable]:
    return list(dict.fromkeys(ids))


def overlap_at_k(a_ids: Sequence[Hashable], b_ids: Sequence[Hashable], k: int) -> float:
    """|top-k of a ∩ top-k of b| / the longer of the two top-k lists.

    Dividing by the hits returned rather than by k: two versions that return the same 3 hits
    for k = 10 (only 3 documents match a filter) agree fully. Both empty: 1.0 (they agree
    there is nothing); one empty and not the other: 0.0. Repeated ids count once."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top_a, top_b = _unique(a_ids)[:k], _unique(b_ids)[:k]
    longer = max(len(top_a), len(top_b))
    if longer == 0:
        return 1.0
    return len(set(top_a) & set(top_b)) / longer


def rank_correlation(a_ids: Sequence[Hashable], b_ids: Sequence[Hashable]) -> float | None:
    """Kendall's tau of the order of the ids both lists hold (see the module docstring), in
    [-1, 1]; None when fewer than 2 ids are common, as there is no pair to order."""
    b_position = {item: position for position, item in enumerate(_unique(b_ids))}
    order = [b_position[item] for item in _unique(a_ids) if item in b_position]
    n = len(order)
    if n < 2:
        return None
    concordant = sum(1 for i in range(n) for j in range(i + 1, n) if order[i] < order[j])
    pairs = n * (n - 1) // 2
    return (2 * concordant - pairs) / pairs


def length_ratio(stable_text: str, canary_text: str) -> float | None:
    """Canary length / stable length; None when stable answered nothing and the canary did."""
    if not stable_text:
        return 1.0 if not canary_text else None
    return len(canary_text) / len(stable_text)


@dataclass
class Agreement:
    """The running aggregate of one (stable_version, canary_version) pair. Sums, not means, so
    that aggregates from several replicas merge exactly."""

    stable_version: str
    canary_version: str
    k: int = OVERLAP_K
    search_pairs: int = 0
    overlap_sum: float = 0.0
    rank_pairs: int = 0
    rank_sum: float = 0.0
    text_pairs: int = 0
    exact_matches: int = 0
    length_pairs: int = 0
    length_ratio_sum: float = 0.0

    @property
    def pairs(self) -> int:
        return self.search_pairs + self.text_pairs

    @property
    def mean_overlap(self) -> float | None:
        return self.overlap_sum / self.search_pairs if self.search_pairs else None

    @property
    def mean_rank_correlation(self) -> float | None:
        return self.rank_sum / self.rank_pairs if self.rank_pairs else None

    @property
    def exact_match_rate(self) -> float | None:
        return self.exact_matches / self.text_pairs if self.text_pairs else None

    @property
    def mean_length_ratio(self) -> float | None:
        return self.length_ratio_sum / self.length_pairs if self.length_pairs else None

    def add_search(
        self, a_hits_ids: Sequence[Hashable], b_hits_ids: Sequence[Hashable], k: int | None = None
    ) -> None:
        """One shadowed search: `a` stable's hit ids, `b` the canary's, each best first."""
        if k is not None and k != self.k:
            raise ValueError(f"this aggregate compares at k={self.k}, got k={k}")
        top_a, top_b = _unique(a_hits_ids)[: self.k], _unique(b_hits_ids)[: self.k]
        self.search_pairs += 1
        self.overlap_sum += overlap_at_k(top_a, top_b, self.k)
        tau = rank_correlation(top_a, top_b)
        if tau is not None:
            self.rank_pairs += 1
            self.rank_sum += tau

    def add_text(self, a_text: str, b_text: str) -> None:
        """One shadowed greedy generation: `a` stable's answer, `b` the canary's."""
        self.text_pairs += 1
        self.exact_matches += int(a_text == b_text)
        ratio = length_ratio(a_text, b_text)
        if ratio is not None:
            self.length_pairs += 1
            self.length_ratio_sum += ratio

    def merged(self, other: Agreement) -> Agreement:
        mine = (self.stable_version, self.canary_version, self.k)
        theirs = (other.stable_version, other.canary_version, other.k)
        if mine != theirs:
            raise ValueError(f"cannot merge agreement of {theirs} into {mine}")
        return Agreement(
            self.stable_version,
            self.canary_version,
            self.k,
            search_pairs=self.search_pairs + other.search_pairs,
            overlap_sum=self.overlap_sum + other.overlap_sum,
            rank_pairs=self.rank_pairs + other.rank_pairs,
            rank_sum=self.rank_sum + other.rank_sum,
            text_pairs=self.text_pairs + other.text_pairs,
            exact_matches=self.exact_matches + other.exact_matches,
            length_pairs=self.length_pairs + other.length_pairs,
            length_ratio_sum=self.length_ratio_sum + other.length_ratio_sum,
        )

    __add__ = merged

    def summary(self) -> dict[str, Any]:
        """The means, for status output and MLflow metrics."""
        return {
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "pairs": self.pairs,
            f"overlap_at_{self.k}": self.mean_overlap,
            "rank_correlation": self.mean_rank_correlation,
            "exact_match_rate": self.exact_match_rate,
            "length_ratio": self.mean_length_ratio,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Agreement:
        return cls(**data)
