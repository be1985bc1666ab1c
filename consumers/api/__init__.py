"""Operator API and dashboard (SPEC section 7): ``rfm api``.

Read-only over the aggregates the scorer keeps atomically in Redis. Shell: ``app`` (routes,
wiring), ``guard`` (bearer token, host check, response headers), ``queries`` (Redis reads into
records), ``live`` (Server-Sent Events), ``export`` (streamed CSV/JSONL). Pure core:
``report`` (per-segment counts and money), ``matrices`` (R x F grid, transition flow),
``customer`` and ``thresholds`` (lookup documents), ``metrics`` (Prometheus text).
``static/`` is the dashboard: plain HTML, CSS and JavaScript, no build step.
"""
