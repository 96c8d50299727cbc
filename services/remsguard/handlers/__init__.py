"""Handlers: one verb each, wiring the contract, the engine and the sinks together."""
