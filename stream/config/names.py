"""Fixed vocabularies that settings choose from."""

INTERACTION_KINDS = ("live_view", "comment", "message", "like", "share", "review", "click")
DIMENSIONS = ("r", "f", "m", "i")
COLLECT_PLATFORMS = ("shopify", "shopline", "woocommerce")
# Segment e-commerce event names counted as interactions unless [collect.tracking] says otherwise
TRACKED_EVENTS = {"Product Reviewed": "review", "Product Shared": "share"}
