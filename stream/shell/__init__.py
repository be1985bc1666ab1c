"""The imperative shell around the core: apply batches of input (``processor``), periodic work
with no input event (``refresh``: thresholds and the clock), and CLV refits (``refit``).
It talks to the store and a publisher through their interfaces (``ports``), never to Kafka or
Faust; ``wiring`` builds a processor from the deployment's settings."""
