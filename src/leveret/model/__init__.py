"""The broker's state: vhosts, exchanges, bindings, queues, consumers, channels.

Synchronous and deterministic: nothing here awaits or reads a clock; callers pass
``now`` in. The model knows nothing of frames or sockets: it talks to the outside
through the small :class:`leveret.model.channel.ChannelSink` protocol.
"""
