"""Workflows this app registers: the demo workflows (see workflows/examples/)."""

from workflows.examples import content_review, expense_approval, parallel_approval, purchase_order, seed_demo

__all__ = ["content_review", "expense_approval", "parallel_approval", "purchase_order", "seed_demo"]
