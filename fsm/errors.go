package fsm

import (
	"errors"
	"fmt"
)

// Code classifies why a command was rejected. Rejections are values that are
// stored (for idempotent replays) and mapped to API status codes by transport.
type Code uint8

// Codes are stored in the idempotency table; append only.
const (
	CodeOK Code = iota
	CodeInvalidArgument
	CodeNotFound
	CodeAlreadyExists
	CodeFailedPrecondition
	CodeResourceExhausted
	// CodeUnavailable: the cluster cannot decide yet (no signing key); retry.
	CodeUnavailable
)

// Sentinel errors so that errors.Is works across layers.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrUnavailable        = errors.New("unavailable")
)

// Error is a rejected command: the request was well formed enough to be
// applied, but the state machine refused it. It is deterministic, so every
// replica produces the same Error for the same entry.
type Error struct {
	Code    Code   `msgpack:"c"`
	Message string `msgpack:"m"`
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, fsm.ErrNotFound) and friends work.
func (e *Error) Is(target error) bool {
	return target == e.sentinel()
}

func (e *Error) sentinel() error {
	switch e.Code {
	case CodeInvalidArgument:
		return ErrInvalidArgument
	case CodeNotFound:
		return ErrNotFound
	case CodeAlreadyExists:
		return ErrAlreadyExists
	case CodeFailedPrecondition:
		return ErrFailedPrecondition
	case CodeResourceExhausted:
		return ErrResourceExhausted
	case CodeUnavailable:
		return ErrUnavailable
	}
	return nil
}

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalidf(format string, args ...any) *Error {
	return errorf(CodeInvalidArgument, format, args...)
}
