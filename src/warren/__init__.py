"""Warren: reliable RabbitMQ worker roles for Kubernetes."""

__version__ = "0.1.0"
