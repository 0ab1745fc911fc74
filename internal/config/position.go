package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// decodeError says where in b a decoding error is: a syntax error or a
// value of the wrong type names its line and column (1-based), so an
// operator editing agentca.json by hand finds the mistake.
func decodeError(b []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var off int64
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	case errors.Is(err, io.ErrUnexpectedEOF):
		off = int64(len(b))
	default:
		return fmt.Errorf("config: %s: %w", FileName, err)
	}
	line, col := position(b, off)
	return fmt.Errorf("config: %s: line %d, column %d: %w", FileName, line, col, err)
}

// position turns a byte offset into a 1-based line and column. A syntax
// error's offset is just past the offending byte, so it points at it.
func position(b []byte, off int64) (line, col int) {
	off = max(0, min(off, int64(len(b))))
	before := b[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, max(col, 1)
}
