"""Campaign actions (SPEC section 7): signed webhooks fired by segment changes and orders.

Pure core: ``rules`` (the rule file), ``matching`` (which rules an event fires), ``variants``
(A/B and order-value splits), ``actions`` (the exact request), ``signing`` (HMAC). Shell:
``delivery`` (HTTP with retries), ``ledger`` (Redis records), ``dispatch`` (one fired rule,
end to end) and ``runner`` (the Kafka consumer loop behind ``rfm campaigns``).
"""
