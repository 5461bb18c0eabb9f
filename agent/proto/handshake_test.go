package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestReadHelloTakesOnlyASmallHello(t *testing.T) {
	good, err := Append(nil, Hello{Version: Version, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := ReadHello(bytes.NewReader(good)); err != nil || h.Token != "s3cret" || h.Version != Version {
		t.Fatalf("ReadHello(good) = %+v, %v", h, err)
	}
	if _, err := ReadHello(bytes.NewReader([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})); !errors.Is(err, ErrYamuxFirst) {
		t.Errorf("a yamux header: %v, want ErrYamuxFirst", err)
	}
	big := make([]byte, HeaderSize)
	big[0] = byte(TypeHello)
	binary.BigEndian.PutUint32(big[1:], MaxHelloSize+1)
	if _, err := ReadHello(bytes.NewReader(big)); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("a Hello of %d bytes: %v, want refused before reading it", MaxHelloSize+1, err)
	}
	ping, _ := Append(nil, Ping{})
	if _, err := ReadHello(bytes.NewReader(ping)); err == nil || !strings.Contains(err.Error(), "want Hello") {
		t.Errorf("a Ping first: %v", err)
	}
	if _, err := ReadHello(bytes.NewReader(good[:len(good)-1])); err == nil {
		t.Error("a cut Hello was taken")
	}
}
