package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Message is one stored message, as listed by GET /messages and written to
// the data file.
type Message struct {
	ID   uint64    `json:"id"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

// errExists says a message with that id is already stored.
var errExists = errors.New("id already stored")

// store keeps messages in memory and, when it has a file, appends each one.
type store struct {
	mu   sync.Mutex
	msgs []Message
	ids  map[uint64]bool
	file *os.File // nil: memory only
}

// openStore loads path's messages (if it exists) and appends new ones to
// it. An empty path keeps messages in memory only.
func openStore(path string) (*store, error) {
	s := &store{ids: map[uint64]bool{}}
	if path == "" {
		return s, nil
	}
	if err := s.load(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open --data %q: %w", path, err)
	}
	s.file = f
	return s, nil
}

func (s *store) load(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open --data %q: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("--data %q line %d: want one JSON message per line: %w", path, line, err)
		}
		s.msgs = append(s.msgs, m)
		s.ids[m.ID] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read --data %q: %w", path, err)
	}
	return nil
}

// add stores a message under a new id; an id already stored is errExists.
func (s *store) add(id uint64, text string) (Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids[id] {
		return Message{}, fmt.Errorf("message id %d: %w", id, errExists)
	}
	m := Message{ID: id, Text: text, Time: time.Now().UTC()}
	if s.file != nil {
		line, err := json.Marshal(m)
		if err != nil {
			return Message{}, fmt.Errorf("encode message %d: %w", id, err)
		}
		// One write per line: O_APPEND keeps lines whole for readers.
		if _, err := s.file.Write(append(line, '\n')); err != nil {
			return Message{}, fmt.Errorf("append message %d to %s: %w", id, s.file.Name(), err)
		}
	}
	s.msgs = append(s.msgs, m)
	s.ids[id] = true
	return m, nil
}

// list returns a copy of the messages in the order they were stored.
func (s *store) list() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message{}, s.msgs...)
}

func (s *store) close() error {
	if s.file == nil {
		return nil
	}
	return s.file.Close()
}
