// A sarama consumer group (Debian's golang-github-shopify-sarama-dev, 1.22): produce
// N keyed messages, consume them all with ConsumeGroup, then cancel the context:
// Consume must return, and Close must succeed.
//
// usage: sarama-group BROKER TOPIC N (built by scripts/test into target/test-go)
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type handler struct {
	mu   *sync.Mutex
	seen map[string]bool
}

func (h handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)] = true
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

func main() {
	broker, topic := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_0_0_0
	cfg.Producer.Return.Successes = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	p, err := sarama.NewSyncProducer([]string{broker}, cfg)
	if err != nil {
		fmt.Println("FAIL: producer:", err)
		os.Exit(1)
	}
	for i := 0; i < n; i++ {
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.StringEncoder(strconv.Itoa(i))}); err != nil {
			fmt.Println("FAIL: produce:", err)
			os.Exit(1)
		}
	}
	p.Close()
	h := handler{mu: &sync.Mutex{}, seen: map[string]bool{}}
	g, err := sarama.NewConsumerGroup([]string{broker}, "sarama-group", cfg)
	if err != nil {
		fmt.Println("FAIL: group:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for ctx.Err() == nil {
		h.mu.Lock()
		got := len(h.seen)
		h.mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.mu.Lock()
	got := len(h.seen)
	h.mu.Unlock()
	// Consume must return once its context is cancelled.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			fmt.Println("FAIL: consume:", err)
			os.Exit(1)
		}
	case <-time.After(20 * time.Second):
		fmt.Println("FAIL: Consume did not return after its context was cancelled")
		os.Exit(1)
	}
	if err := g.Close(); err != nil {
		fmt.Println("FAIL: close:", err)
		os.Exit(1)
	}
	if got < n {
		fmt.Printf("FAIL: consumed %d of %d\n", got, n)
		os.Exit(1)
	}
	fmt.Println("OK")
}
