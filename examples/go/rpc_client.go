// rpc_client.go: the RabbitMQ tutorial-six ("RPC") client, in Go.
//
//	./rpc_client 30      # asks the rpc_server for fib(30)
//
// Replies come back on an exclusive, server-named queue, as in the tutorial; with DIRECT_REPLY_TO=1
// they use direct reply-to (amq.rabbitmq.reply-to) and no reply queue at all. The broker URL comes
// from AMQP_URL (default amqp://guest:guest@localhost:5672/).
package main

import (
	"context"
	"log"
	"math/rand"
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

func randomString(l int) string {
	bytes := make([]byte, l)
	for i := 0; i < l; i++ {
		bytes[i] = byte(65 + rand.Intn(25))
	}
	return string(bytes)
}

func fibonacciRPC(n int) (res int, err error) {
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

	replyTo := "amq.rabbitmq.reply-to"
	if os.Getenv("DIRECT_REPLY_TO") == "" {
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		failOnError(err, "Failed to declare a queue")
		replyTo = q.Name
	}

	msgs, err := ch.Consume(replyTo, "", true, false, false, false, nil)
	failOnError(err, "Failed to register a consumer")

	corrID := randomString(32)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err = ch.PublishWithContext(ctx, "", "rpc_queue", false, false, amqp.Publishing{
		ContentType:   "text/plain",
		CorrelationId: corrID,
		ReplyTo:       replyTo,
		Body:          []byte(strconv.Itoa(n)),
	})
	failOnError(err, "Failed to publish a message")

	for d := range msgs {
		if corrID == d.CorrelationId {
			res, err = strconv.Atoi(string(d.Body))
			failOnError(err, "Failed to convert body to integer")
			break
		}
	}
	return
}

func main() {
	rand.Seed(time.Now().UTC().UnixNano())
	n := 30
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	log.Printf(" [x] Requesting fib(%d)", n)
	res, err := fibonacciRPC(n)
	failOnError(err, "Failed to handle RPC request")
	log.Printf(" [.] Got %d", res)
}
