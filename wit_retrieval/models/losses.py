"""Contrastive losses for mixed-modal retrievers (InfoNCE and the options of the embedding papers).

- InfoNCE with in-batch negatives and a learnable temperature (CLIP);
- Gemini Embedding's duplicate mask: a pair sharing the target image or the query is no negative;
- hard negatives weighted as in EmbeddingGemma: w = exp(alpha * stopgrad(sim)), alpha = 5;
- same-tower negatives (query-query), a spread-out regulariser and Matryoshka (MRL) losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def duplicate_mask(query_keys: Sequence, target_keys: Sequence) -> torch.Tensor:
    """[B, B] bool: True off the diagonal where queries or targets are identical (not negatives)."""
    q = _codes(query_keys)
    t = _codes(target_keys)
    same = (q[:, None] == q[None, :]) | (t[:, None] == t[None, :])
    return same & ~torch.eye(len(q), dtype=torch.bool)


def info_nce(queries: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor, *,
             duplicates: torch.Tensor | None = None, hard_negatives: torch.Tensor | None = None,
             hard_valid: torch.Tensor | None = None, hard_alpha: float = 5.0,
             same_tower: bool = False, symmetric: bool = False) -> torch.Tensor:
    """Mean InfoNCE of L2-normalised queries [B, D] against positives [B, D] (row i matches row i).

    `hard_negatives` [B, K, D] are extra negatives of each query, their terms weighted in the
    denominator by exp(hard_alpha * sim) with sim not differentiated (EmbeddingGemma).
    `same_tower` adds the other queries of the batch as negatives of each query.
    """
    batch = queries.shape[0]
    masked = duplicates if duplicates is not None else torch.zeros(batch, batch, dtype=torch.bool)
    masked = masked.to(queries.device)
    logits = logit_scale * queries @ positives.T
    columns = [logits.masked_fill(masked, NEG_INF)]
    if hard_negatives is not None:
        columns.append(_hard_logits(queries, hard_negatives, hard_valid, logit_scale, hard_alpha))
    if same_tower:
        self_mask = masked | torch.eye(batch, dtype=torch.bool, device=queries.device)
        columns.append((logit_scale * queries @ queries.T).masked_fill(self_mask, NEG_INF))
    targets = torch.arange(batch, device=queries.device)
    loss = F.cross_entropy(torch.cat(columns, dim=1), targets)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T.masked_fill(masked.T, NEG_INF), targets)) / 2
    return loss


def _hard_logits(queries, hard_negatives, hard_valid, logit_scale, hard_alpha: float) -> torch.Tensor:
    """[B, K] logits of each query's own hard negatives, weighted by exp(alpha * stopgrad(sim))."""
    sims = torch.einsum("bd,bkd->bk", queries, hard_negatives)
    hard = logit_scale * sims + hard_alpha * sims.detach()  # log(w) added: w * e^{s/tau}
    if hard_valid is not None:
        hard = hard.masked_fill(~hard_valid.to(hard.device), NEG_INF)
    return hard


def spread_out(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine similarity between different rows (EmbeddingGemma's regulariser)."""
    batch = embeddings.shape[0]
    if batch < 2:
        return embeddings.new_zeros(())
    sims = embeddings @ embeddings.T
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=embeddings.device)
    return sims[off_diagonal].pow(2).mean()


def truncate(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` coordinates, re-normalised (a Matryoshka prefix)."""
    return F.normalize(embeddings[..., :dim], dim=-1)


def _codes(keys: Sequence) -> torch.Tensor:
    """Integer codes of hashable keys (equal keys, equal codes)."""
    index: dict = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)


def local_info_nce(queries: torch.Tensor, positives: torch.Tensor, all_queries: torch.Tensor,
                   all_positives: torch.Tensor, rows: torch.Tensor, logit_scale: torch.Tensor, *,
                   masked: torch.Tensor | None = None, hard_negatives: torch.Tensor | None = None,
                   hard_valid: torch.Tensor | None = None, hard_alpha: float = 5.0,
                   same_tower: bool = False, symmetric: bool = False) -> torch.Tensor:
    """SUM over this process's rows of the InfoNCE terms of `info_nce`, against the global batch.

    `queries`/`positives` [b, D] are local rows; `all_queries`/`all_positives` [N, D] the global
    batch (gathered with gradients), in which local row i sits at `rows[i]`; `masked` [b, N] marks
    duplicates (never the positive itself). Divided by N and summed over processes, this is
    exactly `info_nce` of the global batch (open_clip's local loss).
    """
    batch = queries.shape[0]
    if masked is None:
        masked = torch.zeros(batch, all_positives.shape[0], dtype=torch.bool, device=queries.device)
    logits = logit_scale * queries @ all_positives.T
    columns = [logits.masked_fill(masked, NEG_INF)]
    if hard_negatives is not None:
        columns.append(_hard_logits(queries, hard_negatives, hard_valid, logit_scale, hard_alpha))
    if same_tower:
        itself = torch.zeros_like(masked)
        itself[torch.arange(batch, device=queries.device), rows] = True
        columns.append((logit_scale * queries @ all_queries.T).masked_fill(masked | itself, NEG_INF))
    loss = F.cross_entropy(torch.cat(columns, dim=1), rows, reduction="sum")
    if symmetric:
        backward = (logit_scale * positives @ all_queries.T).masked_fill(masked, NEG_INF)
        loss = (loss + F.cross_entropy(backward, rows, reduction="sum")) / 2
    return loss


def local_spread_out(embeddings: torch.Tensor, all_embeddings: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """SUM over local rows of squared cosines to the other rows of the global batch, / (N (N - 1))."""
    total = all_embeddings.shape[0]
    if total < 2:
        return embeddings.new_zeros(())
    sims = (embeddings @ all_embeddings.T).pow(2)
    sims = sims.masked_fill(F.one_hot(rows, total).bool(), 0.0)
    return sims.sum() / (total * (total - 1))
