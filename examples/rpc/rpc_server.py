#!/usr/bin/env python
# RabbitMQ tutorial six ("RPC"), Python with pika: the server. It answers each request on rpc_queue
# with fib(n) to the request's reply_to, with its correlation_id. Runs against Leveret as against
# RabbitMQ: start `leveret server`, then this, then rpc_client.py (AMQP_URL picks another broker).
import os

import pika

url = os.environ.get("AMQP_URL")
params = pika.URLParameters(url) if url else pika.ConnectionParameters(host="localhost")
connection = pika.BlockingConnection(params)
channel = connection.channel()

channel.queue_declare(queue="rpc_queue")


def fib(n):
    if n == 0:
        return 0
    elif n == 1:
        return 1
    else:
        return fib(n - 1) + fib(n - 2)


def on_request(ch, method, props, body):
    n = int(body)

    print(f" [.] fib({n})")
    response = fib(n)

    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=str(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)

print(" [x] Awaiting RPC requests")
channel.start_consuming()
