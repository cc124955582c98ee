"""What the host orchestrator and the in-container workloads agree on, and nothing else.

Both sides import this package; it imports neither of them, no DL framework and not
numpy (a test holds it to that): JSON Schemas of the two documents (spec.json in,
metrics.json out), the event-line format, atomic JSON writing, the model specs, the
implementation registry and the dataset table. The images copy it next to workloads/.
"""
