package api

import (
	"context"
	"encoding/json"
	"time"

	"github.com/dsgate/dsgate/core/sample"
)

// Engine is the part of core/engine the API uses: submit one generation request and
// read its events; read the scheduler's counters for /metrics. Implementations must be
// safe for concurrent use.
type Engine interface {
	// Submit queues req. The channel receives one or more events, the last one with
	// Finish != "", and is then closed. Cancelling ctx ends the request within one step.
	// Errors: ErrOverloaded (queue full), ErrContextLength and ErrInvalidRequest wrapped.
	Submit(ctx context.Context, req GenRequest) (<-chan GenEvent, error)
	// Stats returns the engine's counters and gauges.
	Stats() EngineStats
}

// GenRequest is one generation request as the API hands it to the engine.
type GenRequest struct {
	Prompt      []int32
	Tenant      string // prefix-cache salt derived from the API key, never from the body
	MaxTokens   int
	Sampling    Sampling
	StopIDs     []int32
	StopStrings []string
	Logprobs    bool
	TopLogprobs int
	Policy      sample.Policy // optional external sampler (a WASM extension); owned by the engine once submitted
}

// Sampling holds the sampler parameters of a request (OpenAI names in comments).
type Sampling struct {
	Temperature       float64 // temperature; 0 = greedy
	TopP              float64 // top_p; 1 = off
	TopK              int     // top_k; 0 = off
	MinP              float64 // min_p; 0 = off
	RepetitionPenalty float64 // repetition_penalty; 1 = off
	PresencePenalty   float64 // presence_penalty
	FrequencyPenalty  float64 // frequency_penalty
	Seed              *uint64 // seed; nil = random
}

// Finish reasons of GenEvent.Finish.
const (
	FinishStop      = "stop"
	FinishLength    = "length"
	FinishCancelled = "cancelled"
	FinishError     = "error"
)

// GenEvent is one step's delta of a running request.
type GenEvent struct {
	Text     string
	Tokens   []int32
	Logprobs []TokenLogprob
	Finish   string // "" while running; then FinishStop, FinishLength, FinishCancelled or FinishError
	Usage    Usage  // set on the final event
	Err      error  // with Finish == FinishError
}

// TokenLogprob is the log-probability of one sampled token and of the most likely
// alternatives at that step.
type TokenLogprob struct {
	ID      int32
	Logprob float64
	Top     []TopLogprob
}

// TopLogprob is one alternative of a TokenLogprob.
type TopLogprob struct {
	ID      int32
	Logprob float64
}

// Usage counts tokens of one request.
type Usage struct {
	PromptTokens       int
	CachedPromptTokens int
	CompletionTokens   int
}

// EngineStats are the engine's gauges and counters, exported on /metrics.
type EngineStats struct {
	QueueLen        int     // requests waiting (gauge)
	Running         int     // sequences running (gauge)
	KVBlocksUsed    int     // KV cache blocks in use (gauge)
	KVBlocksFree    int     // KV cache blocks free (gauge)
	PrefixHitTokens int64   // prompt tokens served from the prefix cache (counter)
	PromptTokens    int64   // prompt tokens submitted (counter)
	GeneratedTokens int64   // tokens sampled (counter)
	Steps           int64   // scheduler steps run (counter)
	StepSeconds     float64 // seconds spent in steps (counter)
}

// Message is one chat message as the chat template sees it.
type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// ToolCall is an assistant message's call of a tool (OpenAI shape).
type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names a function and its JSON-encoded arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tokenizer is the part of core/tokenizer the API uses. Safe for concurrent use.
type Tokenizer interface {
	Encode(text string, addBOS bool) []int32
	Decode(ids []int32, skipSpecial bool) string
	// ApplyChatTemplate renders msgs with the built-in DeepSeek-V3 template; the result
	// starts with the BOS text and is tokenized with Encode(s, false).
	ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error)
	BOS() int32
	EOS() int32
	// TokenText is the text of a special token id (BOS/EOS), used by WASM templates.
	TokenText(id int32) string
}

// SessionStore keeps chat sessions (sessions.Store seen through the API's types).
// Errors wrap ErrSessionNotFound, ErrSessionBusy, ErrSessionConflict or
// ErrSessionStoreUnavailable so that the error handler maps them to stable codes.
type SessionStore interface {
	Create(ctx context.Context, owner, system string, metadata map[string]string) (*Session, error)
	Get(ctx context.Context, owner, id string) (*Session, error)
	List(ctx context.Context, owner string, limit, offset int) ([]*Session, int, error)
	Delete(ctx context.Context, owner, id string) error
	SetMetadata(ctx context.Context, owner, id string, md map[string]string) error
	Acquire(ctx context.Context, owner, id string) (release func(), err error)
	AppendTurn(ctx context.Context, owner, id string, expectedTurns int, t Turn) error
	Ping(ctx context.Context) error
}

// Session is a stored conversation.
type Session struct {
	ID       string
	Owner    string
	Created  time.Time
	Updated  time.Time
	System   string
	Metadata map[string]string
	Turns    []Turn
	// NumTurns is len(Turns) when Turns were loaded, else the count the store reported.
	NumTurns int
}

// Turn is one completed exchange: the new user (and tool) messages, then the reply.
type Turn struct {
	Messages  []SessionMessage
	PromptIDs []int32 // ids prefilled this turn beyond the previous turns' ids
	OutputIDs []int32 // ids sampled
}

// SessionMessage is one stored message.
type SessionMessage struct {
	Role    string    `json:"role"`
	Content string    `json:"content"`
	Time    time.Time `json:"time"`
	Tokens  int       `json:"tokens"`
}

// Extensions is the WASM extension host (extensions.Host seen through the API's types).
// Errors wrap ErrExtensionNotFound, ErrExtensionExists, ErrInvalidModule,
// ErrModuleTooLarge or ErrExtensionFailed.
type Extensions interface {
	Add(ctx context.Context, name, kind string, module []byte) (ExtensionInfo, error)
	List() []ExtensionInfo
	Get(name string) (ExtensionInfo, bool)
	Delete(name string) error
	RenderTemplate(ctx context.Context, name string, in TemplateInput) (string, error)
	NewSampler(ctx context.Context, name string, args json.RawMessage, seed uint64) (sample.Policy, error)
	// MaxModuleBytes is the upload size limit.
	MaxModuleBytes() int64
}

// ExtensionInfo describes an uploaded module.
type ExtensionInfo struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	ABIVersion int       `json:"abi_version"`
	Created    time.Time `json:"created"`
}

// TemplateInput is what a template extension receives.
type TemplateInput struct {
	Messages            []Message `json:"messages"`
	BOSToken            string    `json:"bos_token"`
	EOSToken            string    `json:"eos_token"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
}
