"""The broker boundary: the only package that imports pika.

Everything above it speaks ``warren.messages`` values and ``warren.errors`` exceptions.
"""

from warren.broker.pipeline import publish_pipelined
from warren.broker.session import Session, connection_parameters

__all__ = ["Session", "connection_parameters", "publish_pipelined"]
