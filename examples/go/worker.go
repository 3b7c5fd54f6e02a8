// worker.go: the RabbitMQ tutorial-two ("Work Queues") worker, in Go.
//
// Consumes from the durable queue "task_queue" with prefetch 1 (fair
// dispatch) and manual acknowledgements, sleeping one second for every '.'
// in a message body before acking it.
//
// Differences from the tutorial, both for tests:
//   - AMQP_URL sets the broker URL (default amqp://guest:guest@localhost:5672/);
//   - WORKER_MAX_MESSAGES=N makes the worker exit (closing its channel and
//     connection cleanly) after it has acked N messages. Unset or 0: run
//     until killed, as in the tutorial.
package main

import (
	"bytes"
	"log"
	"os"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func failOnError(err error, msg string) {
	if err != nil {
		log.Panicf("%s: %s", msg, err)
	}
}

func amqpURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@localhost:5672/"
}

func maxMessages() int {
	s := os.Getenv("WORKER_MAX_MESSAGES")
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		log.Fatalf("WORKER_MAX_MESSAGES must be a non-negative integer, got %q", s)
	}
	return n
}

func main() {
	limit := maxMessages()

	conn, err := amqp.Dial(amqpURL())
	failOnError(err, "Failed to connect to RabbitMQ")
	defer conn.Close()

	ch, err := conn.Channel()
	failOnError(err, "Failed to open a channel")
	defer ch.Close()

	q, err := ch.QueueDeclare(
		"task_queue", // name
		true,         // durable
		false,        // delete when unused
		false,        // exclusive
		false,        // no-wait
		nil,          // arguments
	)
	failOnError(err, "Failed to declare a queue")

	err = ch.Qos(
		1,     // prefetch count
		0,     // prefetch size
		false, // global
	)
	failOnError(err, "Failed to set QoS")

	msgs, err := ch.Consume(
		q.Name, // queue
		"",     // consumer
		false,  // auto-ack
		false,  // exclusive
		false,  // no-local
		false,  // no-wait
		nil,    // args
	)
	failOnError(err, "Failed to register a consumer")

	// Without WORKER_MAX_MESSAGES this channel is never closed: wait forever,
	// as the tutorial does.
	done := make(chan struct{})

	go func() {
		acked := 0
		for d := range msgs {
			log.Printf("Received a message: %s", d.Body)
			dotCount := bytes.Count(d.Body, []byte("."))
			t := time.Duration(dotCount)
			time.Sleep(t * time.Second)
			log.Printf("Done")
			failOnError(d.Ack(false), "Failed to ack a message")
			acked++
			if limit > 0 && acked >= limit {
				log.Printf(" [*] Acked %d messages, exiting", acked)
				close(done)
				return
			}
		}
		log.Printf(" [*] Delivery channel closed by the broker, exiting")
		close(done)
	}()

	log.Printf(" [*] Waiting for messages. To exit press CTRL+C")
	<-done
}
