"""HTTP ingestion (`rfm collect`): storefront webhooks and Segment calls as input events.

The front door for storefronts that cannot produce to Kafka: it writes SPEC section 2
events to the input topics, keyed by customer, and answers 2xx only once Kafka acknowledged
every event of the request.

Pure (no I/O): ``outgoing`` (the events written and the mapping context), ``signature``,
``guest`` (keyed ids of guest buyers), ``platforms`` (Shopify, SHOPLINE, WooCommerce),
``tracking`` (Segment ``track``/``batch``), ``submission`` (``/v1/events`` items checked by
the worker's parsers), ``auth`` (bearer token, write keys).

Service: ``app`` (routes, ``serve``), ``body`` (bounded reading, JSON), ``producer``
(acks=all, idempotent, bounded wait), ``deliveries`` (webhook redeliveries, in Redis),
``metrics``.
"""
