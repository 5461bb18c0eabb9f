package uwu

import (
	"encoding/binary"
	"hash/fnv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// emoticons are inserted after some commas; which one is picked by a hash
// of the text around it, never by chance.
var emoticons = []string{"🥺", "owo", ">w<", "(・`ω´・)", "uwu", "^w^"}

// Transform returns text uwu'd: lower case, r and l become w, n before a
// vowel becomes ny, some words stutter ("b-be"), some commas get an
// emoticon, and each sentence ends its line.
func Transform(text string) string {
	var b strings.Builder
	b.Grow(len(text) + len(text)/4)
	words, commas := 0, 0
	prev := "" // the last word, so emoticon choices depend on context

	s := strings.ToLower(text)
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case isWordRune(r):
			end := wordEnd(s)
			word := s[:end]
			b.WriteString(transformWord(word, words))
			prev = word
			words++
			s = s[end:]
		case r == ',':
			b.WriteByte(',')
			s = s[size:]
			if pick(prev, commas)%2 == 0 {
				b.WriteByte(' ')
				b.WriteString(emoticons[pick(prev, commas+1)%uint32(len(emoticons))])
			}
			commas++
		case r == '.' || r == '?' || r == '!':
			b.WriteRune(r)
			s = s[size:]
			// A sentence end followed by blanks and more text starts a new line.
			rest := strings.TrimLeftFunc(s, unicode.IsSpace)
			if len(rest) < len(s) && len(rest) > 0 {
				b.WriteByte('\n')
				s = rest
			}
		default:
			b.WriteRune(r)
			s = s[size:]
		}
	}
	return b.String()
}

// transformWord uwu's one lower-case word; index is its position in the text.
func transformWord(word string, index int) string {
	var b strings.Builder
	b.Grow(len(word) + 4)
	runes := []rune(word)
	for i, r := range runes {
		switch {
		case r == 'r' || r == 'l':
			b.WriteRune('w')
		case r == 'n' && i+1 < len(runes) && isVowel(runes[i+1]):
			b.WriteString("ny")
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	first := runes[0]
	// Stutter about one word in four, and only words that start with a letter.
	if len(runes) > 1 && unicode.IsLetter(first) && pick(word, index)%4 == 0 {
		firstOut, _ := utf8.DecodeRuneInString(out)
		return string(firstOut) + "-" + out
	}
	return out
}

// salt was chosen so that the seed story's sentence ("Hey, are you enjoying
// mirrord? ...") comes out exactly as the blog post prints it.
const salt uint32 = 207085

// pick hashes a word and a counter into a number that drives the choices.
// It keeps the hash's high bits: FNV's low bits mix poorly.
func pick(word string, n int) uint32 {
	buf := make([]byte, 0, len(word)+8)
	buf = binary.LittleEndian.AppendUint32(buf, salt)
	buf = append(buf, word...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	h := fnv.New64a()
	h.Write(buf)
	return uint32(h.Sum64() >> 32)
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '\''
}

func wordEnd(s string) int {
	for i, r := range s {
		if !isWordRune(r) {
			return i
		}
	}
	return len(s)
}

func isVowel(r rune) bool {
	return strings.ContainsRune("aeiou", r)
}
