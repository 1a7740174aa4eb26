"""Helpers of bench/soak.py: the load client, the faults, the platform, the verdict."""
