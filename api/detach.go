package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// Detached waiters.
//
// A long-poll or an event stream may wait a minute or more for a worker.
// Held the usual net/http way, each one parks two goroutines and the
// connection's buffers and request state: about 30 KB a waiter. Instead,
// once a waiting request has been authenticated, metered and found
// unfinished, the handler takes its connection off net/http (Hijack),
// answers with "Connection: close" so the body ends with the connection,
// and returns. What is left per waiter is the socket, a hub entry and a
// timer: the hub's one watch goroutine hands each change to the waiter,
// which writes it from a short-lived goroutine. A write that cannot
// finish within writeTimeout ends the connection, so a client that went
// away is found at the latest by the next heartbeat (streams) or at the
// end of the wait (long-polls).
//
// Where the connection cannot be hijacked (HTTP/2, a wrapping writer),
// the handlers wait on their own goroutine as before.

// writeTimeout bounds every write to a detached connection.
const writeTimeout = 10 * time.Second

// detached keeps the connections taken off net/http, so that shutdown
// can answer and close them: http.Server.Shutdown no longer sees them.
type detached struct {
	mu     sync.Mutex
	conns  map[*outbox]parked
	closed bool
	writes sync.WaitGroup // writer goroutines, waited for by shutdown
}

// parked is a waiter whose connection is detached.
type parked interface {
	attach(o *outbox) // called once, before any of the others
	shutdown()        // the server stops: end the response now
	ended()           // the connection is closed: stop waiting
}

func newDetached() *detached { return &detached{conns: map[*outbox]parked{}} }

// hijack takes c's connection off net/http and attaches to p an outbox
// that writes the response head, with status and c's headers, before the
// first bytes of body. It reports false, and changes nothing, when the
// connection cannot be hijacked or the server is shutting down.
func (d *detached) hijack(c *gin.Context, status int, contentType string, p parked) bool {
	if d == nil {
		return false
	}
	u, ok := c.Writer.(interface{ Unwrap() http.ResponseWriter })
	if !ok {
		return false
	}
	if _, ok := u.Unwrap().(http.Hijacker); !ok || c.Writer.Written() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	c.Status(status) // for the access log; the head is written by the outbox
	conn, _, err := c.Writer.Hijack()
	if err != nil {
		reqLogger(c).Warn("hijacking a waiting request", "err", err)
		return false
	}
	c.Set(ctxDetached, true)
	h := c.Writer.Header().Clone()
	h.Set("Content-Type", contentType)
	o := &outbox{d: d, conn: conn, status: status, head: h, stream: contentType == eventStream}
	d.conns[o] = p
	p.attach(o)
	return true
}

// shutdown ends every detached connection (long-polls get the record as
// it is, streams are closed for the client to resume elsewhere) and waits
// for their last writes, at most writeTimeout each.
func (d *detached) shutdown() {
	d.mu.Lock()
	d.closed = true
	all := make([]parked, 0, len(d.conns))
	for _, p := range d.conns {
		all = append(all, p)
	}
	d.mu.Unlock()
	for _, p := range all {
		p.shutdown()
	}
	d.writes.Wait()
}

// closeGently closes a connection the way net/http ends a "Connection:
// close" response: it stops sending, then closes a little later, so that
// unread bytes from the client (a pipelined request) do not make the
// kernel reset the connection before the client has read the response.
func closeGently(c net.Conn) {
	if tc, ok := c.(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
		time.AfterFunc(500*time.Millisecond, func() { c.Close() })
		return
	}
	c.Close()
}

// count reports the detached connections, for tests.
func (d *detached) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// forget is called once o's connection is closed.
func (d *detached) forget(o *outbox) {
	d.mu.Lock()
	p := d.conns[o]
	delete(d.conns, o)
	d.mu.Unlock()
	if p != nil {
		p.ended()
	}
}

// outbox writes one detached response, in order, from short-lived
// goroutines: send never blocks its caller (the hub's watch goroutine,
// or a timer).
type outbox struct {
	d      *detached
	conn   net.Conn
	status int
	head   http.Header // nil once written
	stream bool        // the body has no length: it ends with the connection

	mu       sync.Mutex
	pending  bytes.Buffer
	writing  bool // a writer goroutine is draining pending
	closing  bool // close the connection once pending is written
	finished bool // the connection is closed, or will be: drop further sends
}

// send queues b, and with last, ends the response after it. The first
// send writes the head; a response that is not a stream is sent whole, in
// one send with last, and gets a Content-Length.
func (o *outbox) send(b []byte, last bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.finished {
		return
	}
	if o.head != nil {
		o.writeHead(len(b), last)
	}
	o.pending.Write(b)
	if last {
		o.closing, o.finished = true, true
	}
	if o.writing {
		return
	}
	o.writing = true
	o.d.writes.Add(1)
	go o.drain()
}

// close ends the response without writing more.
func (o *outbox) close() { o.send(nil, true) }

func (o *outbox) writeHead(bodyLen int, last bool) {
	h := o.head
	o.head = nil
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Connection", "close") // the body ends with the connection
	if last && !o.stream {
		h.Set("Content-Length", strconv.Itoa(bodyLen))
	}
	fmt.Fprintf(&o.pending, "HTTP/1.1 %d %s\r\n", o.status, http.StatusText(o.status))
	h.Write(&o.pending)
	o.pending.WriteString("\r\n")
}

func (o *outbox) drain() {
	defer o.d.writes.Done()
	for {
		o.mu.Lock()
		if o.pending.Len() == 0 {
			o.writing = false
			closing := o.closing
			o.mu.Unlock()
			if closing {
				closeGently(o.conn)
				o.d.forget(o)
			}
			return
		}
		b := bytes.Clone(o.pending.Bytes())
		o.pending.Reset()
		o.mu.Unlock()

		o.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := o.conn.Write(b); err != nil { // the client is gone, or not reading
			o.mu.Lock()
			o.pending.Reset()
			o.closing, o.finished = true, true
			o.mu.Unlock()
		}
	}
}
