"""Sans-IO AMQP 0-9-1: bytes in, events out; events in, bytes out.

No sockets, no asyncio, no clock. :class:`leveret.protocol.connection.AMQPConnection`
is the entry point; :mod:`leveret.protocol.codec` encodes what the server sends.
"""
