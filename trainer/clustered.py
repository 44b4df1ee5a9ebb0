"""Cluster-pruned top-k for large catalogues: score the clusters first, then only the items of the best few.

At export, spherical k-means groups the item vectors into `clusters` lists of at most `capacity`
items each (an item whose nearest cluster is full goes to its next-nearest with room, so every
list stays short and the lists fill a dense [clusters, capacity] table). An answer scores every
centroid, keeps the `probe` best clusters and ranks only their items: per sequence that is
clusters + probe * capacity dot products instead of one per item. It is approximate; the README
gives what it costs in HR@20 on Toys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from serving.wire import PADDING
from trainer.model import NEG_INF, NextItemModel, hedge_odds, hedged

EXACT_MAX_ITEMS = 200_000  # below this, scoring every item is cheap enough: exact answers
PROBE = 16
SLACK = 1.5       # capacity = SLACK * mean cluster size
CHOICES = 8       # nearest clusters an item may go to before any cluster with room
ITERATIONS = 8
SAMPLE_PER_CLUSTER = 64
CHUNK = 65_536


@dataclass(frozen=True)
class Clustering:
    centroids: torch.Tensor  # [clusters, hidden]: each cluster's mean item vector
    members: torch.Tensor    # [clusters, capacity] model ids, PADDING in empty slots

    def describe(self, probe: int) -> dict:
        clusters, capacity = self.members.shape
        return {"clusters": clusters, "capacity": capacity, "probe": probe,
                "scanned_per_answer": clusters + probe * capacity}


def clusters_for(num_items: int) -> int:
    """About 4 * sqrt(items): 4,000 clusters of ~250 items at a million."""
    return max(1, round(4 * math.sqrt(num_items)))


def default_clusters(num_items: int) -> int:
    """0 (exact) up to EXACT_MAX_ITEMS items, clusters_for above."""
    return 0 if num_items <= EXACT_MAX_ITEMS else clusters_for(num_items)


def cluster(table: torch.Tensor, clusters: int, seed: int = 0) -> Clustering:
    """Group the item vectors table[1:] (row 0 is padding) into `clusters` bounded lists."""
    vectors = nn.functional.normalize(table[1:].detach().float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    clusters = min(clusters, vectors.shape[0])
    sample = vectors[torch.randperm(vectors.shape[0], generator=generator)[:clusters * SAMPLE_PER_CLUSTER]]
    centroids = sample[torch.randperm(sample.shape[0], generator=generator)[:clusters]]
    for _ in range(ITERATIONS):
        nearest = _nearest(sample, centroids, 1)[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample)
        filled = torch.bincount(nearest, minlength=clusters) > 0
        centroids[filled] = nn.functional.normalize(sums[filled], dim=1)
    capacity = math.ceil(SLACK * vectors.shape[0] / clusters)
    slots = _assign(vectors, centroids, capacity)
    members = torch.full((clusters, capacity), PADDING, dtype=torch.long)
    members.view(-1)[slots] = torch.arange(1, vectors.shape[0] + 1)  # model id = row + 1
    means = torch.zeros(clusters, table.shape[1]).index_add_(0, slots // capacity, table[1:].detach().float())
    counts = (members != PADDING).sum(1, keepdim=True).clamp(min=1)
    return Clustering(means / counts, members)


def _nearest(vectors: torch.Tensor, centroids: torch.Tensor, count: int) -> torch.Tensor:
    return torch.cat([(chunk @ centroids.T).topk(count, dim=1).indices for chunk in vectors.split(CHUNK)])


def _assign(vectors: torch.Tensor, centroids: torch.Tensor, capacity: int) -> torch.Tensor:
    """Each item's slot (cluster * capacity + position): nearest cluster with room among its
    CHOICES nearest, in order of how close items are; leftovers fill any free slot."""
    clusters = centroids.shape[0]
    choices = _nearest(vectors, centroids, min(CHOICES, clusters))
    fill = torch.zeros(clusters, dtype=torch.long)
    slots = torch.full((vectors.shape[0],), -1, dtype=torch.long)
    for rank in range(choices.shape[1]):
        waiting = (slots < 0).nonzero()[:, 0]
        wanted = choices[waiting, rank]
        closeness = (vectors[waiting] * centroids[wanted]).sum(1)
        order = torch.argsort(wanted * 4.0 - closeness.clamp(-1, 1), stable=True)  # by cluster, closest first
        waiting, wanted = waiting[order], wanted[order]
        first = torch.searchsorted(wanted, wanted)  # where each item's cluster starts in this round
        position = fill[wanted] + torch.arange(len(wanted)) - first
        fits = position < capacity
        slots[waiting[fits]] = wanted[fits] * capacity + position[fits]
        fill += torch.bincount(wanted[fits], minlength=clusters)
    free = torch.ones(clusters * capacity, dtype=torch.bool)
    free[slots[slots >= 0]] = False
    left = (slots < 0).nonzero()[:, 0]
    slots[left] = free.nonzero()[: len(left), 0]
    return slots


class ClusteredTopK(nn.Module):
    """The model plus a cluster-pruned top-k; same inputs and outputs as export.TopK."""

    def __init__(self, model: NextItemModel, top_k: int, clustering: Clustering, probe: int = PROBE):
        super().__init__()
        self.model = model
        self.probe = min(probe, clustering.members.shape[0])
        self.top_k = min(top_k, self.probe * clustering.members.shape[1], model.num_ids - 1)
        self.register_buffer("centroids", clustering.centroids)
        self.register_buffer("members", clustering.members)
        # each model id's place in members (cluster * capacity + position); padding's is in no cluster
        slots = torch.full((model.num_ids,), -clustering.members.shape[1], dtype=torch.long)
        filled = clustering.members.view(-1) != PADDING
        slots[clustering.members.view(-1)[filled]] = torch.arange(clustering.members.numel())[filled]
        self.register_buffer("slots", slots)

    def forward(self, item_ids: torch.Tensor, query_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if query_ids is None:
            hidden = self.model.encode_newest(item_ids)
            top_ids, top_scores = self._top(item_ids, hidden @ self.centroids.T, lambda at: at(hidden))
            return (top_ids, top_scores) if self.model.text is None else (top_ids, top_scores, hidden)
        # a searched row hedges as the exact head does (NextItemModel.searched_scores), over the
        # clusters and then over the candidates: both normalisers are taken over what is scored
        plain, queried = self.model.encode_searched(item_ids, query_ids)
        odds = hedge_odds(item_ids, query_ids)
        top_ids, top_scores = self._top(item_ids, hedged(queried @ self.centroids.T, plain @ self.centroids.T, odds),
                                         lambda at: hedged(at(queried), at(plain), odds))
        return top_ids, top_scores, queried

    def _top(self, item_ids: torch.Tensor, centroid_scores: torch.Tensor, score: Callable
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The top_k of the probe best clusters' items; score(at) scores the candidates, given
        at(hidden), the scores [batch, candidates] of a hidden state for them (its dot products with
        them plus the seen-item bias, as the exact head scores)."""
        near = centroid_scores.topk(self.probe, dim=1).indices
        candidates = self.members[near].flatten(1)
        vectors = self.model.item_embedding(candidates)
        seen = self._seen(near, item_ids)

        def at(hidden: torch.Tensor) -> torch.Tensor:
            return ((vectors @ hidden[:, :, None])[:, :, 0] + seen).masked_fill(candidates == PADDING, NEG_INF)

        top_scores, where = score(at).topk(self.top_k, dim=1)
        return candidates.gather(1, where), top_scores

    def _seen(self, near: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """The seen-item bias at each candidate [batch, probe * capacity] of the probed clusters
        near [batch, probe] that is in the row's history: found by the history items' slots, not by
        comparing every candidate with every history item."""
        capacity, probe = self.members.shape[1], near.shape[1]
        slots = self.slots[item_ids[:, -self.model.args.max_len:]]
        found = near[:, :, None] == torch.div(slots, capacity, rounding_mode="floor")[:, None, :]
        at = torch.arange(probe, device=near.device)[None, :, None] * capacity + (slots % capacity)[:, None, :]
        at = at.masked_fill(~found, probe * capacity)  # a history item outside the probed clusters: a spare column
        seen = torch.zeros(near.shape[0], probe * capacity + 1, device=near.device).scatter(1, at.flatten(1), 1.0)
        return self.model.seen_bias * seen[:, :-1]
