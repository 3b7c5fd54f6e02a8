"""Leveret: a work-queue message broker that speaks AMQP 0-9-1 like RabbitMQ."""

__version__ = "0.1.0"
