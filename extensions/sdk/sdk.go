// Package sdk is the Go guest SDK for dsgate extension modules (ABI v1, see ../ABI.md).
//
// A module is a Go program built for GOOS=wasip1 GOARCH=wasm with -buildmode=c-shared. Its
// init function registers exactly one handler, and its main function is empty (the host calls
// _initialize, never main):
//
//	func init() { sdk.HandleTemplate(render) }  // a template module
//	func init() { sdk.HandleSampler(&mine{}) }   // a sampler module
//	func main() {}
//
// The package exports the ABI functions (dsgate_abi_version, dsgate_alloc, dsgate_error,
// dsgate_template_render, dsgate_sampler_init, dsgate_sampler_next) when built for wasip1; on
// other platforms it compiles to the plain types and codecs below, so handlers can be unit-tested
// natively. Every instance serves one request, so package-level state in a guest is per request.
package sdk

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ABIVersion is the ABI version this SDK implements.
const ABIVersion = 1

// Message is one chat message of a template's input.
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

// TemplateInput is the JSON document a template receives.
type TemplateInput struct {
	ABIVersion          int       `json:"abi_version"`
	Messages            []Message `json:"messages"`
	BOSToken            string    `json:"bos_token"`
	EOSToken            string    `json:"eos_token"`
	AddGenerationPrompt bool      `json:"add_generation_prompt"`
}

// TemplateFunc renders the prompt text for in.
type TemplateFunc func(in *TemplateInput) (string, error)

// Candidate is one possible next token: its id and logit. Candidates arrive sorted by
// descending logit.
type Candidate struct {
	ID    int32
	Logit float32
}

// Step is one sampler step's input. In a module its slices alias the host's input buffer, which
// the next step overwrites: copy what must outlive the call.
type Step struct {
	Step   int         // generated tokens so far (0 for the first)
	Seed   uint64      // the request's seed (also the seed of WASI random_get)
	Recent []int32     // the newest generated ids, oldest first (bounded by the host)
	Cands  []Candidate // top-N candidates, descending logit
}

// Sampler chooses tokens for one sequence.
type Sampler interface {
	// Init receives the request's sampler_args JSON (empty if none) and seed, before any Next.
	Init(args []byte, seed uint64) error
	// Next returns the chosen id (one of s.Cands) or stop = true to end the sequence.
	Next(s *Step) (id int32, stop bool, err error)
}

// Sizes of the step layout (ABI.md, "sampler step input").
const (
	StepHeaderBytes = 24
	CandidateBytes  = 8
)

// DecodeStep parses one sampler step input (ABI.md layout) into s, reusing its slices.
func DecodeStep(b []byte, s *Step) error {
	if len(b) < StepHeaderBytes {
		return fmt.Errorf("sdk: step input of %d bytes is shorter than its header", len(b))
	}
	le := binary.LittleEndian
	nRecent, nCands := int(le.Uint32(b[4:])), int(le.Uint32(b[8:]))
	if want := StepHeaderBytes + 4*nRecent + CandidateBytes*nCands; nRecent < 0 || nCands < 0 || want != len(b) {
		return fmt.Errorf("sdk: step input is %d bytes, its header says %d", len(b), want)
	}
	s.Step = int(le.Uint32(b[0:]))
	s.Seed = le.Uint64(b[16:])
	s.Recent = s.Recent[:0]
	o := StepHeaderBytes
	for range nRecent {
		s.Recent = append(s.Recent, int32(le.Uint32(b[o:])))
		o += 4
	}
	s.Cands = s.Cands[:0]
	for range nCands {
		s.Cands = append(s.Cands, Candidate{ID: int32(le.Uint32(b[o:])), Logit: math.Float32frombits(le.Uint32(b[o+4:]))})
		o += CandidateBytes
	}
	return nil
}

// EncodeStep is DecodeStep's inverse (what the host writes); for tests and other hosts.
func EncodeStep(s *Step) []byte {
	le := binary.LittleEndian
	b := make([]byte, StepHeaderBytes+4*len(s.Recent)+CandidateBytes*len(s.Cands))
	le.PutUint32(b[0:], uint32(s.Step))
	le.PutUint32(b[4:], uint32(len(s.Recent)))
	le.PutUint32(b[8:], uint32(len(s.Cands)))
	le.PutUint64(b[16:], s.Seed)
	o := StepHeaderBytes
	for _, id := range s.Recent {
		le.PutUint32(b[o:], uint32(id))
		o += 4
	}
	for _, c := range s.Cands {
		le.PutUint32(b[o:], uint32(c.ID))
		le.PutUint32(b[o+4:], math.Float32bits(c.Logit))
		o += CandidateBytes
	}
	return b
}

// handlers holds the module's registered handler. A guest instance serves one request, so
// this per-process state is per request by construction.
var handlers struct {
	template TemplateFunc
	sampler  Sampler
}

// HandleTemplate registers f as the module's template. Call it from init.
func HandleTemplate(f TemplateFunc) { handlers.template = f }

// HandleSampler registers s as the module's sampler. Call it from init.
func HandleSampler(s Sampler) { handlers.sampler = s }
