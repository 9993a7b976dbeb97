// Many viewers blocked on one LL-HLS playlist, for bench/origin.py.
//
//	go run bench/origin_blockers.go -addr 127.0.0.1:8080 -path '/live/c/r/ll.m3u8?_HLS_msn=5&_HLS_part=0' -n 10000
//
// Opens -n connections (HTTP/1.1, one request each), sends every request, prints "ready" on
// stdout once all are written, then reads every answer and prints one JSON object: the
// statuses and, per answer, the wall clock (Unix ns) when its last byte arrived. The clock is
// the one Python's time.time_ns() reads on the same machine. Written in Go so the client's own
// cost stays far below the server's: one goroutine per connection, no parsing beyond the
// status line and Content-Length.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

type result struct {
	Statuses map[string]int `json:"statuses"`
	Errors   []string       `json:"errors"`
	DoneNs   []int64        `json:"done_ns"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "host:port")
	path := flag.String("path", "/", "request target")
	n := flag.Int("n", 10000, "connections")
	dialers := flag.Int("dialers", 200, "connections opened at once")
	timeout := flag.Duration("timeout", 60*time.Second, "give up on an answer after")
	flag.Parse()

	request := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: gzip\r\n\r\n", *path, *addr))
	conns := make([]net.Conn, *n)
	var mu sync.Mutex
	out := result{Statuses: map[string]int{}, DoneNs: make([]int64, 0, *n)}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(out.Errors) < 20 {
			out.Errors = append(out.Errors, err.Error())
		}
		out.Statuses["error"]++
	}

	var opened sync.WaitGroup
	slots := make(chan struct{}, *dialers)
	for i := range conns {
		opened.Add(1)
		slots <- struct{}{}
		go func(i int) {
			defer opened.Done()
			defer func() { <-slots }()
			conn, err := net.DialTimeout("tcp", *addr, 10*time.Second)
			if err != nil {
				fail(err)
				return
			}
			if _, err := conn.Write(request); err != nil {
				conn.Close()
				fail(err)
				return
			}
			conns[i] = conn
		}(i)
	}
	opened.Wait()
	fmt.Println("ready")
	os.Stdout.Sync()

	var answered sync.WaitGroup
	for _, conn := range conns {
		if conn == nil {
			continue
		}
		answered.Add(1)
		go func(conn net.Conn) {
			defer answered.Done()
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(*timeout))
			response, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				fail(err)
				return
			}
			_, err = io.Copy(io.Discard, response.Body)
			done := time.Now().UnixNano()
			response.Body.Close()
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			out.Statuses[fmt.Sprint(response.StatusCode)]++
			out.DoneNs = append(out.DoneNs, done)
			mu.Unlock()
		}(conn)
	}
	answered.Wait()
	json.NewEncoder(os.Stdout).Encode(out)
}
