"""`rfm bench`: the SPEC section 10 figures, measured on a real Kafka and Redis.

Each module measures one figure (throughput, baseline, latency, refresh_cost, memory, batch,
import_rate) or one family (collector: `rfm collect`, driven by ``http_load`` with what
``storefront`` sends) so it can be read and changed on its own; ``runner`` runs them in one
isolated namespace and ``report`` turns the results into a table, JSON and a chart.
"""


class BenchError(RuntimeError):
    """A measurement could not finish; the message says which and why."""
