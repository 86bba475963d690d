"""The sample shop behind ``retention demo`` and the end-to-end tests."""

from retention.demo.shop import PII_COLUMNS, SHOP_TABLES, ShopSummary, build_shop, shop_metadata

__all__ = ["PII_COLUMNS", "SHOP_TABLES", "ShopSummary", "build_shop", "shop_metadata"]
