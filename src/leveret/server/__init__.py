"""The asyncio glue: one Protocol per connection, the listener, timers, shutdown."""
