"""remsguard: REMS-style monitoring compliance for esketamine and ketamine sessions."""

__version__ = "0.1.0"
