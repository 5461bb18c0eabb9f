package mux

import "sync"

// chunkSize is the unit of receive buffering: a stream holds as many
// chunks as it has unread bytes (rounded up), and none when it has read
// everything.
const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

type chunk struct {
	b    *[chunkSize]byte
	r, w int // unread bytes are b[r:w]
}

// recvBuffer is a stream's received, unread data: a queue of pooled
// chunks. Callers serialise access.
type recvBuffer struct {
	chunks []chunk // chunks[head:] are live
	head   int
	n      int // unread bytes
}

func (q *recvBuffer) len() int { return q.n }

// write appends p, filling the last chunk before taking another.
func (q *recvBuffer) write(p []byte) {
	q.n += len(p)
	for len(p) > 0 {
		// read leaves no emptied chunks behind: none live means none.
		if len(q.chunks) == 0 || q.chunks[len(q.chunks)-1].w == chunkSize {
			q.chunks = append(q.chunks, chunk{b: chunkPool.Get().(*[chunkSize]byte)})
		}
		c := &q.chunks[len(q.chunks)-1]
		n := copy(c.b[c.w:], p)
		c.w += n
		p = p[n:]
	}
}

// read moves unread bytes into p and returns the chunks it emptied to the
// pool.
func (q *recvBuffer) read(p []byte) int {
	total := 0
	for len(p) > 0 && q.head < len(q.chunks) {
		c := &q.chunks[q.head]
		n := copy(p, c.b[c.r:c.w])
		c.r += n
		p = p[n:]
		total += n
		if c.r == c.w {
			chunkPool.Put(c.b)
			q.chunks[q.head] = chunk{}
			q.head++
		}
	}
	q.n -= total
	if q.head == len(q.chunks) {
		q.chunks, q.head = q.chunks[:0], 0
	} else if q.head > 32 && q.head*2 > len(q.chunks) {
		live := copy(q.chunks, q.chunks[q.head:])
		clear(q.chunks[live:])
		q.chunks, q.head = q.chunks[:live], 0
	}
	return total
}

// release returns every chunk to the pool, dropping unread data.
func (q *recvBuffer) release() {
	for i := q.head; i < len(q.chunks); i++ {
		chunkPool.Put(q.chunks[i].b)
	}
	q.chunks, q.head, q.n = nil, 0, 0
}
