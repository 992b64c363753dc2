"""tierroute: route each LLM query to the cheapest model tier that answers it correctly."""

__version__ = "0.1.0"
