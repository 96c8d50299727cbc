"""Adapters at the edges: Kafka, storage, HTTP, metrics, logs."""
