#!/usr/bin/env python
# RabbitMQ tutorial six ("RPC"), Python with pika: the client. Its replies come back on an exclusive,
# server-named callback queue, as in the tutorial; with DIRECT_REPLY_TO=1 they use direct reply-to
# (amq.rabbitmq.reply-to) instead, with no reply queue at all. Usage: python rpc_client.py [N]
import os
import sys
import uuid

import pika


class FibonacciRpcClient:
    def __init__(self):
        url = os.environ.get("AMQP_URL")
        params = pika.URLParameters(url) if url else pika.ConnectionParameters(host="localhost")
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()

        if os.environ.get("DIRECT_REPLY_TO"):
            self.callback_queue = "amq.rabbitmq.reply-to"
        else:
            result = self.channel.queue_declare(queue="", exclusive=True)
            self.callback_queue = result.method.queue

        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True)

        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key="rpc_queue",
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=self.corr_id),
            body=str(n),
        )
        while self.response is None:
            self.connection.process_data_events(time_limit=None)
        return int(self.response)


fibonacci_rpc = FibonacciRpcClient()

n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
print(f" [x] Requesting fib({n})")
response = fibonacci_rpc.call(n)
print(f" [.] Got {response}")
