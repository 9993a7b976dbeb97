// The reference for bench/origin.py's blocked viewers: the least any server can do for them.
//
//	go run bench/origin_parked.go -addr 127.0.0.1:18081 -n 10000 -body answer.bin
//
// An HTTP/1.1 server in Go that reads each request's head, parks it, and prints "parked N" on
// stdout once -n are parked (or after -wait, however many there are); when a line arrives on
// stdin, it writes every parked connection the same answer (a 200 with the -body file's
// bytes, gzip-encoded as onair's was) in one loop, as one event loop would — no routing, no rendering, no metrics, no Kafka: only the
// writes that 10,000 answers cost on this machine, next to the 10,000 clients that read
// them — and prints "wrote N in D" (D in ms). bench/origin.py times it exactly as it times
// onair.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "host:port to listen on")
	n := flag.Int("n", 10000, "requests to park before saying so")
	bodyPath := flag.String("body", "", "the answer's body")
	encoding := flag.String("encoding", "gzip", "its Content-Encoding (empty: none)")
	wait := flag.Duration("wait", 60*time.Second, "say how many are parked after this, if not all")
	flag.Parse()

	body, err := os.ReadFile(*bodyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	head := "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
	if *encoding != "" {
		head += "Content-Encoding: " + *encoding + "\r\n"
	}
	answer := append([]byte(fmt.Sprintf("%sContent-Length: %d\r\n\r\n", head, len(body))), body...)

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("listening")
	var mu sync.Mutex
	var parked []net.Conn
	var announce sync.Once
	go func() { // a viewer that never arrived must not hang the bench: say what there is
		time.Sleep(*wait)
		mu.Lock()
		announce.Do(func() { fmt.Println("parked", len(parked)) })
		mu.Unlock()
	}()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func(conn net.Conn) {
				reader := bufio.NewReader(conn)
				for {
					line, err := reader.ReadString('\n')
					if err != nil {
						conn.Close()
						return
					}
					if line == "\r\n" {
						break
					}
				}
				mu.Lock()
				parked = append(parked, conn)
				if len(parked) == *n {
					announce.Do(func() { fmt.Println("parked", len(parked)) })
				}
				mu.Unlock()
			}(conn)
		}
	}()
	stdin := bufio.NewReader(os.Stdin)
	stdin.ReadString('\n')
	mu.Lock()
	started := time.Now()
	for _, conn := range parked {
		conn.Write(answer)
	}
	elapsed := time.Since(started)
	fmt.Printf("wrote %d in %.1f\n", len(parked), float64(elapsed.Microseconds())/1000)
	mu.Unlock()
	stdin.ReadString('\n') // stay up until told (or stdin closes)
}
