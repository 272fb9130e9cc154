package extensions

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one chat message as a template module receives it (same JSON as the OpenAI API
// and core/tokenizer.Message).
type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// ToolCall is one tool call of an assistant message.
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function a ToolCall invokes and its JSON arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// TemplateInput is what RenderTemplate hands a template module, as JSON (ABI.md).
type TemplateInput struct {
	Messages            []Message `json:"messages"`
	BOSToken            string    `json:"bos_token"`
	EOSToken            string    `json:"eos_token"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
}

// templateWire is TemplateInput plus the ABI version, as sent to the guest.
type templateWire struct {
	ABIVersion int `json:"abi_version"`
	TemplateInput
}

// RenderTemplate renders a prompt with the template module name, in a fresh instance. Errors
// wrap ErrNotFound (no such template) or ErrFailed (the module trapped, timed out, returned an
// error, or produced more than MaxOutputBytes or invalid UTF-8).
func (h *Host) RenderTemplate(ctx context.Context, name string, in TemplateInput) (string, error) {
	m, err := h.lookup(name, KindTemplate)
	if err != nil {
		return "", err
	}
	if in.Messages == nil {
		in.Messages = []Message{}
	}
	payload, err := json.Marshal(templateWire{ABIVersion: ABIVersion, TemplateInput: in})
	if err != nil {
		return "", fmt.Errorf("%w: encode template input: %v", ErrFailed, err)
	}
	inst, err := m.take(ctx)
	if err != nil {
		return "", err
	}
	defer func() {
		inst.close(h.baseCtx)
		h.requestRefill(m)
	}()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: template %q: %s", ErrFailed, name, fmt.Sprintf(format, args...))
	}
	ptr, err := inst.input(ctx, h.opt.CallTimeout, payload)
	if err != nil {
		return "", fail("%v", err)
	}
	stack := []uint64{uint64(ptr), uint64(len(payload))}
	if err := inst.call(ctx, h.opt.CallTimeout, inst.render, stack); err != nil {
		return "", fail("%s: %v", exportTemplate, err)
	}
	res := int64(stack[0])
	if res < 0 {
		return "", fail("%s returned error %d%s", exportTemplate, res, inst.guestError(ctx, h.opt.CallTimeout))
	}
	outPtr, outLen := uint32(uint64(res)>>32), uint32(res)
	if int64(outLen) > int64(h.opt.MaxOutputBytes) {
		return "", fail("output of %d bytes exceeds the limit of %d", outLen, h.opt.MaxOutputBytes)
	}
	out, ok := inst.mem.Read(outPtr, outLen)
	if !ok {
		return "", fail("output [%d, +%d) is outside its %d-byte memory", outPtr, outLen, inst.mem.Size())
	}
	if !utf8.Valid(out) {
		return "", fail("output is not valid UTF-8")
	}
	return string(out), nil
}

// input copies data into a guest buffer obtained from dsgate_alloc and returns its address.
func (i *instance) input(ctx context.Context, timeout time.Duration, data []byte) (uint32, error) {
	ptr, err := i.allocate(ctx, timeout, len(data))
	if err != nil {
		return 0, err
	}
	if !i.mem.Write(ptr, data) {
		return 0, fmt.Errorf("%s returned %d, but %d bytes there are outside its %d-byte memory", exportAlloc, ptr, len(data), i.mem.Size())
	}
	return ptr, nil
}

// allocate calls dsgate_alloc(n) and checks the block lies inside memory.
func (i *instance) allocate(ctx context.Context, timeout time.Duration, n int) (uint32, error) {
	stack := []uint64{uint64(uint32(n))}
	if err := i.call(ctx, timeout, i.alloc, stack); err != nil {
		return 0, fmt.Errorf("%s(%d): %v", exportAlloc, n, err)
	}
	ptr := uint32(stack[0])
	if ptr == 0 && n > 0 {
		return 0, fmt.Errorf("%s(%d) returned 0 (out of memory)", exportAlloc, n)
	}
	if uint64(ptr)+uint64(n) > uint64(i.mem.Size()) {
		return 0, fmt.Errorf("%s(%d) returned %d, outside its %d-byte memory", exportAlloc, n, ptr, i.mem.Size())
	}
	return ptr, nil
}

// guestError returns the module's dsgate_error message (at most 512 bytes) as a suffix, or "".
func (i *instance) guestError(ctx context.Context, timeout time.Duration) string {
	if i.errFn == nil || i.mod.IsClosed() {
		return i.stderr.suffix()
	}
	stack := []uint64{0}
	if err := i.call(ctx, timeout, i.errFn, stack); err != nil {
		return i.stderr.suffix()
	}
	p, n := uint32(stack[0]>>32), min(uint32(stack[0]), 512)
	b, ok := i.mem.Read(p, n)
	if !ok || n == 0 {
		return i.stderr.suffix()
	}
	return ": " + strings.ToValidUTF8(string(b), "?")
}
