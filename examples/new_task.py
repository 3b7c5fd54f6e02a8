#!/usr/bin/env python
# RabbitMQ tutorial two ("Work Queues"), Python with pika, current form: a quorum queue.
# Runs against Leveret: start `leveret server`, then `python new_task.py First message.`
# (set AMQP_URL to reach another broker than localhost:5672).
import os
import sys

import pika

# AMQP_URL picks the broker (e.g. amqp://guest:guest@localhost:5672/), as the Go examples do;
# without it, the tutorial's own line: localhost:5672.
url = os.environ.get("AMQP_URL")
params = pika.URLParameters(url) if url else pika.ConnectionParameters(host="localhost")
connection = pika.BlockingConnection(params)
channel = connection.channel()

channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})

message = " ".join(sys.argv[1:]) or "Hello World!"
channel.basic_publish(
    exchange="",
    routing_key="task_queue",
    body=message,
    properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
)
print(f" [x] Sent {message}")
connection.close()
