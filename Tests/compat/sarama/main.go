// Sarama compatibility scenario (Debian's sarama 1.22, GOPATH build, no network):
// a SyncProducer sends keyed messages with headers (config.Version 2.1: record
// batches v2), then a ConsumerGroup reads them all back and commits; a second
// ConsumerGroup session of the same group finds nothing left to read.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-compat . && ./sarama-compat BOOTSTRAP
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type handler struct {
	mu   sync.Mutex
	got  []string
	want int
	done chan struct{}
	once sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for message := range claim.Messages() {
		header := ""
		for _, h := range message.Headers {
			header += string(h.Key) + "=" + string(h.Value)
		}
		h.mu.Lock()
		h.got = append(h.got, fmt.Sprintf("%s:%s:%s", message.Key, message.Value, header))
		if len(h.got) >= h.want {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
		session.MarkMessage(message, "")
	}
	return nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "sarama: "+format+"\n", args...)
	os.Exit(1)
}

func consume(brokers []string, config *sarama.Config, group, topic string, want int, wait time.Duration) []string {
	consumerGroup, err := sarama.NewConsumerGroup(brokers, group, config)
	if err != nil {
		fail("consumer group: %v", err)
	}
	h := &handler{want: want, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if err := consumerGroup.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "sarama: consume: %v\n", err)
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	select {
	case <-h.done:
	case <-time.After(wait):
	}
	time.Sleep(1500 * time.Millisecond) // let the offsets commit (CommitInterval 100 ms)
	cancel()
	consumerGroup.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

func main() {
	brokers := []string{os.Args[1]}
	config := sarama.NewConfig()
	config.Version = sarama.V2_1_0_0
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Return.Successes = true
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	topic := fmt.Sprintf("sarama-%d", time.Now().UnixNano())

	admin, err := sarama.NewClusterAdmin(brokers, config)
	if err != nil {
		fail("admin: %v", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		fail("create topic: %v", err)
	}
	admin.Close()

	producer, err := sarama.NewSyncProducer(brokers, config)
	if err != nil {
		fail("producer: %v", err)
	}
	var want []string
	for i := 0; i < 50; i++ {
		key, value := fmt.Sprintf("k%d", i%5), fmt.Sprintf("v%d", i)
		_, _, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(value),
			Headers: []sarama.RecordHeader{{Key: []byte("n"), Value: []byte(value)}},
		})
		if err != nil {
			fail("send: %v", err)
		}
		want = append(want, fmt.Sprintf("%s:%s:n=%s", key, value, value))
	}
	producer.Close()

	got := consume(brokers, config, "sarama-group", topic, len(want), 30*time.Second)
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		fail("read back %d of %d messages, or different ones: %v", len(got), len(want), got)
	}
	again := consume(brokers, config, "sarama-group", topic, 1, 4*time.Second)
	if len(again) != 0 {
		fail("the group read %d messages again after committing them", len(again))
	}
	fmt.Println("  sarama 1.22: 50 keyed messages with headers, consumer group read and commit, no re-read")
}
