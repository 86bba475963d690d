"""What transitions do to the data: masking strategies for anonymise."""

from retention.actions.masking import STRATEGIES, Strategy, mask_rows, strategy_for

__all__ = ["STRATEGIES", "Strategy", "mask_rows", "strategy_for"]
