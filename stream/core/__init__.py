"""The pure core: events in, a customer's next state, scores, segment and change out.

No I/O and no clock of its own, so every module here is testable without Kafka or Redis, and
exactly these modules (with the store's pure layout modules) are compiled by mypyc
(``stream.native.MODULES``)."""
