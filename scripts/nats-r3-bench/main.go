// JetStream load generator for scripts/bench-cluster.sh: publishes to a stream with R
// replicas on a NATS cluster (Debian's nats.go 1.22, GOPATH build, no network), with
// a window of async publishes, or paced at a fixed rate; prints msg/s, ack latency
// percentiles and the servers' CPU (utime+stime from /proc) summed over their PIDs.
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/natsr3 .
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

func serverCPU(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+1:])
		u, _ := strconv.Atoi(f[11])
		k, _ := strconv.Atoi(f[12])
		total += float64(u+k) / 100.0
	}
	return total
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000.0
}

func main() {
	url := flag.String("url", "nats://127.0.0.1:14222", "servers, comma-separated")
	n := flag.Int("n", 200000, "messages")
	size := flag.Int("size", 1024, "message bytes")
	replicas := flag.Int("replicas", 3, "stream replicas")
	window := flag.Int("w", 1000, "most async publishes without an ack")
	rate := flag.Int("rate", 0, "messages per second (0: as fast as the window allows)")
	name := flag.String("stream", "R3", "stream name")
	pidList := flag.String("spids", "", "server PIDs, comma-separated, for CPU")
	flag.Parse()
	var pids []int
	for _, p := range strings.Split(*pidList, ",") {
		if v, err := strconv.Atoi(p); err == nil {
			pids = append(pids, v)
		}
	}
	nc, err := nats.Connect(*url)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(*window))
	if err != nil {
		panic(err)
	}
	js.DeleteStream(*name)
	subject := strings.ToLower(*name) + ".x"
	for attempt := 0; ; attempt++ {
		_, err = js.AddStream(&nats.StreamConfig{Name: *name, Subjects: []string{subject}, Storage: nats.FileStorage, Replicas: *replicas})
		if err == nil {
			break
		}
		if attempt > 60 {
			panic(err)
		}
		time.Sleep(time.Second) // the cluster is still electing its meta leader
	}
	payload := make([]byte, *size)
	rand.Read(payload)
	latencies := make([]time.Duration, 0, *n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	c0, t0 := serverCPU(pids), time.Now()
	for i := 0; i < *n; i++ {
		if *rate > 0 {
			due := t0.Add(time.Duration(i) * time.Second / time.Duration(*rate))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
		}
		sent := time.Now()
		future, err := js.PublishAsync(subject, payload, nats.StallWait(60*time.Second))
		if err != nil {
			panic(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-future.Ok():
				mu.Lock()
				latencies = append(latencies, time.Since(sent))
				mu.Unlock()
			case <-future.Err():
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	cpu := serverCPU(pids) - c0
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	fmt.Printf("NATS PUB %d B x %d, R%d: %.0f msg/s | ack latency p50 %.2f ms p99 %.2f ms | servers CPU %.2f s (%.2f s per million) | failed %d\n",
		*size, *n, *replicas, float64(len(latencies))/elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99), cpu, cpu*1e6/float64(*n), failed)
}
