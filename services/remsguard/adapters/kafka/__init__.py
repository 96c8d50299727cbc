"""Kafka adapters: topic layout and creation, producers, the faust-streaming processor app."""
