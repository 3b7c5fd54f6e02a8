// rpc_server.go: the RabbitMQ tutorial-six ("RPC") server, in Go.
//
// Answers each request on the queue "rpc_queue" (a number n) with fib(n), published to the request's
// ReplyTo with its CorrelationId. One request at a time (prefetch 1). The broker URL comes from
// AMQP_URL (default amqp://guest:guest@localhost:5672/); RPC_MAX_REQUESTS=N makes it exit after N.
package main

import (
	"context"
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

func fib(n int) int {
	if n == 0 {
		return 0
	} else if n == 1 {
		return 1
	}
	return fib(n-1) + fib(n-2)
}

func main() {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@localhost:5672/"
	}
	conn, err := amqp.Dial(url)
	failOnError(err, "Failed to connect to RabbitMQ")
	defer conn.Close()

	ch, err := conn.Channel()
	failOnError(err, "Failed to open a channel")
	defer ch.Close()

	q, err := ch.QueueDeclare("rpc_queue", false, false, false, false, nil)
	failOnError(err, "Failed to declare a queue")
	failOnError(ch.Qos(1, 0, false), "Failed to set QoS")

	msgs, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	failOnError(err, "Failed to register a consumer")

	limit, _ := strconv.Atoi(os.Getenv("RPC_MAX_REQUESTS"))
	served := 0
	log.Printf(" [*] Awaiting RPC requests")
	for d := range msgs {
		n, err := strconv.Atoi(string(d.Body))
		failOnError(err, "Failed to convert body to integer")
		log.Printf(" [.] fib(%d)", n)
		response := fib(n)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = ch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{
			ContentType:   "text/plain",
			CorrelationId: d.CorrelationId,
			Body:          []byte(strconv.Itoa(response)),
		})
		cancel()
		failOnError(err, "Failed to publish a message")
		failOnError(d.Ack(false), "Failed to ack")
		served++
		if limit > 0 && served >= limit {
			return
		}
	}
}
