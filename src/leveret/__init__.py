"""Leveret: a work-queue message broker that speaks AMQP 0-9-1 like RabbitMQ."""

__version__ = "0.1.0"

# The embedded broker (leveret.embedded) is imported on first use: `import leveret` stays cheap, which
# matters to the pytest plugin, loaded by every pytest run where leveret is installed.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leveret.embedded import Broker, BrokerTimeout, ThreadedBroker, run_in_thread

__all__ = ["Broker", "BrokerTimeout", "ThreadedBroker", "__version__", "run_in_thread"]


def __getattr__(name: str) -> Any:
    if name in ("Broker", "BrokerTimeout", "ThreadedBroker", "run_in_thread"):
        from leveret import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'leveret' has no attribute {name!r}")
