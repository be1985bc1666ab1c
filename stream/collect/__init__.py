"""HTTP ingestion (`rfm collect`): storefront webhooks and Segment calls as input events."""
