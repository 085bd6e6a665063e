"""The Query-Instructed Adapter (paper, section 3.2) and the plain MLP of the "w/o QIA" ablation.

QIA turns one user or item, given as k feature-field vectors x_1..x_k, into ONE input token of
the LLM, with the query deciding which fields matter:

    Q = x_q W_Q            (1 x d_h)
    K = stack_j(x_j W_Kj)  (k x d_h)     one key projection per field
    V = stack_j(x_j W_Vj)  (k x d_h)     one value projection per field
    h = softmax(Q K^T / sqrt(d_h)) V
    e = Linear(h)          (1 x LLM hidden size)

Heads split d_h as in multi-head attention (the paper uses one head).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from llm4pr.features.encoders import FieldInfo


class QueryInstructedAdapter(nn.Module):
    def __init__(
        self,
        fields: Sequence[FieldInfo],
        query_dim: int,
        output_dim: int,
        hidden_dim: int = 512,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"QIA hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.query = nn.Linear(query_dim, hidden_dim)
        self.keys = nn.ModuleList(nn.Linear(f.dim, hidden_dim) for f in fields)
        self.values = nn.ModuleList(nn.Linear(f.dim, hidden_dim) for f in fields)
        self.output = nn.Linear(hidden_dim, output_dim)

    def forward(self, query: torch.Tensor, fields: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """query [n, d_q], fields k x [n, d_j] -> (tokens [n, output_dim], attention [n, heads, k])."""
        n = query.shape[0]
        if not self.keys:  # an entity without any field (a search user known by nothing but the query)
            return self.output(self.query(query)), query.new_zeros(n, self.num_heads, 0)
        q = self.query(query).view(n, self.num_heads, 1, self.head_dim)
        k = torch.stack([proj(x) for proj, x in zip(self.keys, fields, strict=True)], dim=1)
        v = torch.stack([proj(x) for proj, x in zip(self.values, fields, strict=True)], dim=1)
        k = k.view(n, -1, self.num_heads, self.head_dim).transpose(1, 2)  # [n, heads, k, d]
        v = v.view(n, -1, self.num_heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [n, heads, 1, k]
        attention = scores.softmax(dim=-1)
        h = (attention @ v).reshape(n, -1)  # heads concatenated: [n, hidden_dim]
        return self.output(h), attention.squeeze(2)


class FieldMLPAdapter(nn.Module):
    """The "w/o QIA" ablation: concatenated fields through a two-layer MLP; the query is unused."""

    def __init__(self, fields: Sequence[FieldInfo], query_dim: int, output_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        del query_dim  # same signature as QIA, so that the two are interchangeable
        # Without any field the input is a constant 1, so the token is a learned constant.
        self.net = nn.Sequential(
            nn.Linear(sum(f.dim for f in fields) or 1, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, query: torch.Tensor, fields: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.cat(list(fields), dim=-1) if fields else query.new_ones(query.shape[0], 1)
        return self.net(inputs), query.new_zeros(query.shape[0], 1, len(fields))
