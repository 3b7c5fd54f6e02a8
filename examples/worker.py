#!/usr/bin/env python
# RabbitMQ tutorial two ("Work Queues"), Python with pika, current form: a quorum queue.
# Runs unchanged against Leveret. Start a few of these, then send tasks with new_task.py;
# each '.' in a task's body is one second of "work".
import os
import sys
import time

import pika


def main():
    # AMQP_URL picks the broker (e.g. amqp://guest:guest@localhost:5672/), as the Go examples do;
    # without it, the tutorial's own line: localhost:5672.
    url = os.environ.get("AMQP_URL")
    params = pika.URLParameters(url) if url else pika.ConnectionParameters(host="localhost")
    connection = pika.BlockingConnection(params)
    channel = connection.channel()

    channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})
    print(" [*] Waiting for messages. To exit press CTRL+C")

    def callback(ch, method, properties, body):
        print(f" [x] Received {body.decode()}")
        time.sleep(body.count(b"."))
        print(" [x] Done")
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue="task_queue", on_message_callback=callback)

    channel.start_consuming()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        try:
            sys.exit(0)
        except SystemExit:
            os._exit(0)
