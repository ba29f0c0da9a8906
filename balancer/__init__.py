"""echonext-balancer: a cost-aware HTTP reverse-proxy load balancer for EchoNext backends."""

__version__ = "0.1.0"
