"""The clinic simulator: realistic sessions, injected violations and transport faults.

Pure generation (`simulate`) is separate from output (`remsguard.entrypoints.simulate`):
the same configuration and protocols always give the same lines and the same manifest.
"""

from remsguard.simulation.config import (
    VIOLATION_KINDS,
    ConfigError,
    SimulationConfig,
    TransportRates,
    ViolationRates,
)
from remsguard.simulation.generate import Simulation, simulate
from remsguard.simulation.transport import Delivery

__all__ = [
    "VIOLATION_KINDS",
    "ConfigError",
    "Delivery",
    "Simulation",
    "SimulationConfig",
    "TransportRates",
    "ViolationRates",
    "simulate",
]
