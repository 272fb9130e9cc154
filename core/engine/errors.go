package engine

import (
	"errors"
	"fmt"
)

// ErrOverloaded is returned by Submit when the waiting queue is full (HTTP 503).
var ErrOverloaded = errors.New("engine overloaded: waiting queue is full")

// ErrInvalidRequest is returned by Submit for a malformed request (HTTP 400).
// *PromptTooLongError matches it with errors.Is as well.
var ErrInvalidRequest = errors.New("invalid request")

// ErrClosed is returned by Submit after Close, and carried by the final event of every
// request still in flight when the engine closes.
var ErrClosed = errors.New("engine closed")

// PromptTooLongError reports a prompt that leaves no room to generate within the
// model's maximum sequence length (HTTP 400). It matches ErrInvalidRequest.
type PromptTooLongError struct {
	// PromptTokens is the length of the rejected prompt.
	PromptTokens int
	// MaxSeqLen is the longest sequence (prompt + completion) the engine can hold.
	MaxSeqLen int
}

func (e *PromptTooLongError) Error() string {
	return fmt.Sprintf("prompt has %d tokens, but this model's maximum context length is %d tokens (prompt + completion, at least one token must be left to generate)", e.PromptTokens, e.MaxSeqLen)
}

// Is makes errors.Is(err, ErrInvalidRequest) true.
func (e *PromptTooLongError) Is(target error) bool { return target == ErrInvalidRequest }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidRequest}, args...)...)
}
